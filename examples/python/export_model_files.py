"""Model files, import and export in one tour (NumPy only; onnxruntime is used if installed).

    python3 examples/python/export_model_files.py [output directory]

1. a bidirectional, stacked LSTM is saved to a fastlstm model file (safetensors) with a
   self-check, and loaded back with ``verify=True``;
2. it is exported to ONNX (one standard LSTM node per layer) and, where onnxruntime is
   installed, run there and compared;
3. the ONNX file is imported back with ``from_onnx``, and the weights are handed to PyTorch
   names with ``to_torch_state_dict``.
"""

import os
import sys
import tempfile

import numpy as np

import fastlstm
from fastlstm import io as fio


def main(out_dir):
    rng = np.random.default_rng(0)
    lstm = fastlstm.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    x = rng.standard_normal((3, 20, 8)).astype(np.float32)  # [B, T, I]
    lengths = np.array([20, 11, 5])
    y, _ = lstm(x, lengths=lengths)

    path = os.path.join(out_dir, "lstm.safetensors")
    fio.save(lstm, path, example_input=x, example_lengths=lengths)
    loaded = fio.load(path, verify=True)  # reruns the stored input, raises if outputs differ
    print(f"saved {path} ({os.path.getsize(path)} bytes); reloaded {loaded!r}, self-check passed")

    onnx_path = os.path.join(out_dir, "lstm.onnx")
    fio.to_onnx(lstm, onnx_path, with_lengths=True)
    print(f"exported {onnx_path} ({os.path.getsize(onnx_path)} bytes)")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed: skipping the ONNX Runtime comparison")
    else:
        sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        y_ort = sess.run(["output"], {"input": x, "lengths": lengths.astype(np.int32)})[0]
        print(f"onnxruntime vs fastlstm: max |diff| = {np.max(np.abs(y_ort - y)):.2e}")

    back = fio.from_onnx(onnx_path)
    same = all(np.array_equal(back.params[k], lstm.params[k]) for k in lstm.params)
    print(f"from_onnx: {back!r}, weights identical: {same}")

    sd = fio.to_torch_state_dict(lstm)
    print("PyTorch names:", ", ".join(sorted(sd)[:4]), "...",
          "(torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}))")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as d:
            main(d)
