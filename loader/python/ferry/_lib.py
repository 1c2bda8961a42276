"""ctypes binding of libferry_loader.so (loader/pyapi.h): finds the library, declares the
functions' types, turns a C failure into a Python exception carrying the C one-line reason."""
import ctypes
import errno
import os

API_VERSION = 1
LIB_NAME = "libferry_loader.so"


class Handle(ctypes.Structure):
    """struct ferry_py_loader: opaque, only pointed to."""


_H = ctypes.POINTER(Handle)
_u64p = ctypes.POINTER(ctypes.c_uint64)
_u32p = ctypes.POINTER(ctypes.c_uint32)

_SIGNATURES = {
    "ferry_py_api_version": (ctypes.c_int, []),
    "ferry_py_open": (
        ctypes.c_int,
        [ctypes.POINTER(_H), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64,
         ctypes.c_uint64, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
         ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t],
    ),
    "ferry_py_close": (None, [_H]),
    "ferry_py_next": (ctypes.c_int, [_H, ctypes.c_void_p, ctypes.c_void_p, _u64p, _u64p]),
    "ferry_py_next_view": (ctypes.c_int, [_H, ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.POINTER(ctypes.c_void_p), _u64p, _u64p]),
    "ferry_py_state": (None, [_H, _u64p, _u64p]),
    "ferry_py_seek": (ctypes.c_int, [_H, ctypes.c_uint64, ctypes.c_uint64]),
    "ferry_py_steps_per_epoch": (ctypes.c_uint64, [_H]),
    "ferry_py_vocab_size": (ctypes.c_uint32, [_H]),
    "ferry_py_order": (None, [_H, _u32p, _u32p]),
    "ferry_py_path_name": (ctypes.c_char_p, [_H]),
    "ferry_py_error": (ctypes.c_char_p, [_H]),
    "ferry_py_shard_files": (ctypes.c_int, [_H, ctypes.c_uint32,
                                            ctypes.POINTER(ctypes.c_char_p),
                                            ctypes.POINTER(ctypes.c_char_p)]),
    # Buffers as plain addresses (c_void_p): Python keeps them as ints.
    "ferry_py_buffer_new": (ctypes.c_void_p, [_H]),
    "ferry_py_buffer_free": (None, [ctypes.c_void_p]),
    "ferry_py_next_lent": (ctypes.c_int, [_H, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
                                          _u64p, _u64p]),
}


def _candidates():
    # FERRY_LIB (a path to the library) first: the tests point it at the build tree. Then the
    # copy meson install put beside this file; then the dynamic linker's search path.
    env = os.environ.get("FERRY_LIB")
    if env:
        return [env]
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), LIB_NAME), LIB_NAME]


def _load():
    tried = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append(str(e))
            continue
        for name, (res, args) in _SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                # An older library of the same API version, before a function was added.
                raise ImportError("%s has no %s: older than this package (reinstall both)" %
                                  (path, name)) from None
            fn.restype = res
            fn.argtypes = args
        got = lib.ferry_py_api_version()
        if got != API_VERSION:
            raise ImportError("%s: C API version %d, this package wants %d" %
                              (path, got, API_VERSION))
        return lib
    raise ImportError("cannot load %s (set FERRY_LIB to its path, or run meson install): %s" %
                      (LIB_NAME, "; ".join(tried)))


lib = _load()


def error(rc, reason):
    """The exception for -errno rc with the C side's one-line reason: ValueError for a bad
    argument or malformed data (EINVAL), else OSError with that errno (FileNotFoundError for
    ENOENT, ...), whose strerror is the reason."""
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    code = -rc
    if not reason:
        reason = os.strerror(code)
    if code == errno.EINVAL:
        return ValueError(reason)
    return OSError(code, reason)
