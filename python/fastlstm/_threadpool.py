"""fastlstm's thread pool as a threadpoolctl library controller.

threadpoolctl finds the libraries it controls among the loaded shared objects by file name and
by the symbols they export; the extension ``fastlstm/_core*.so`` exports
``fastlstm_get_num_threads`` / ``fastlstm_set_num_threads`` / ``fastlstm_version`` for this.
Registered when fastlstm is imported, if threadpoolctl is installed (scikit-learn depends on it);
then ``threadpool_info()`` lists fastlstm's pool and ``threadpool_limits(n)`` (or
``threadpool_limits(n, user_api="fastlstm")``) limits it.
"""

_registered = False


def register():
    global _registered
    if _registered:
        return
    try:
        import threadpoolctl
    except ImportError:
        return
    LibController = getattr(threadpoolctl, "LibController", None)
    if LibController is None or not hasattr(threadpoolctl, "register"):
        return  # threadpoolctl < 3.3: no custom controllers

    class FastlstmController(LibController):
        user_api = "fastlstm"
        internal_api = "fastlstm"
        filename_prefixes = ("_core",)
        check_symbols = ("fastlstm_get_num_threads", "fastlstm_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.fastlstm_get_num_threads()

        def set_num_threads(self, num_threads):
            # the C side clamps to [1, 4 x CPUs]; a C int must hold the value first
            self.dynlib.fastlstm_set_num_threads(max(-1, min(int(num_threads), 2**31 - 1)))

        def get_version(self):
            # also called for other libraries named _core* (scipy has some) before
            # threadpoolctl checks check_symbols and drops them: no symbol, no version
            import ctypes

            fn = getattr(self.dynlib, "fastlstm_version", None)
            if fn is None:
                return None
            fn.restype = ctypes.c_char_p
            return fn().decode()

    threadpoolctl.register(FastlstmController)
    _registered = True
