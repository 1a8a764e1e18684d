"""A masked recurrent layer's outputs, Keras's way, whatever the padding side: the engine runs
each row's real steps packed to the left (right padding: in place, through its lengths), and
these functions place its outputs at every step as Keras gives them, and back (the gradients).
"""

from __future__ import annotations

import numpy as np

__all__ = ["reverse_index", "place_outputs", "unplace_outputs"]


def reverse_index(lengths, B, T):
    """[B, T] gather index that reverses each row's first ``lengths[b]`` steps (an involution)."""
    t = np.arange(T)[None, :]
    L = lengths[:, None]
    return np.where(t < L, L - 1 - t, t)


def place_outputs(out, mask, idx, count, hx, B, T, directions, go_backwards, units):
    """Engine outputs (real steps packed left) -> outputs at every step, as Keras gives
    them: at a masked step a one-direction layer repeats the last output (its initial
    state before the first real step); a bidirectional one gives zeros there."""
    if mask is None or (go_backwards and directions == 1):
        if mask is not None:
            out[~mask] = 0  # go_backwards keeps the right-padded processing order
        return out, None
    if idx is None:
        # right padding: the engine's outputs are in place (zeros after each length)
        if directions == 2:
            if (count == 0).any():
                out[count == 0] = 0  # the engine ran one step on empty rows
            return out, None
        last = out[np.arange(B), np.maximum(count - 1, 0)]  # [B, H]
        if hx is not None:
            last[count == 0] = hx[0][0][count == 0]
        elif (count == 0).any():
            last[count == 0] = 0
        return np.where(mask[:, :, None], out, last[:, None, :]), ("prefix", count)
    k = np.cumsum(mask, axis=1) - 1  # [B, T]: the packed step each step shows
    kc = np.maximum(k, 0)
    full = np.take_along_axis(out, kc[:, :, None], axis=1)
    if directions == 2:
        full[~mask] = 0
        return full, (k, None)
    before = k < 0  # no real step yet: the initial state
    if before.any():
        full[before] = 0 if hx is None else np.broadcast_to(
            hx[0][0][:, None, :], (B, T, units))[before]
    return full, (k, before)

def unplace_outputs(d_y, cache):
    """The transpose of :func:`place_outputs` (gradients onto the packed outputs, and
    onto the initial h from the steps before the first real one)."""
    B, T, zero, drop, rev, idx, mask, carry, given = cache
    if carry is None:
        d = np.ascontiguousarray(d_y)
        if mask is not None:
            d = d * mask[:, :, None]
        return d, None
    if isinstance(carry[0], str):
        # a padded step repeats the last real output (the initial h for an empty row)
        count = carry[1]
        d_out = d_y * mask[:, :, None]
        d_last = (d_y * ~mask[:, :, None]).sum(axis=1)  # [B, H]
        real = count > 0
        d_out[np.flatnonzero(real), count[real] - 1] += d_last[real]
        d_h0 = None
        if (~real).any():
            d_h0 = np.where(real[:, None], 0, d_last).astype(d_y.dtype, copy=False)
        return d_out, d_h0
    k, before = carry
    d_out = np.zeros_like(d_y)
    valid = mask if before is None else (k >= 0)
    b_i, t_i = np.nonzero(valid)
    np.add.at(d_out, (b_i, k[b_i, t_i]), d_y[b_i, t_i])
    d_h0 = None
    if before is not None and before.any():
        d_h0 = (d_y * before[:, :, None]).sum(axis=1)  # [B, H]
    return d_out, d_h0
