"""A small binding of the TFLite C API, for the wake-word engines.

It uses the ``libtensorflowlite_c.so`` that pyopen-wakeword bundles (pymicro-wakeword bundles
the same build): both wake-word engines share one loaded library. An :class:`Interpreter` runs
one model, by default through the XNNPACK delegate the library exports
(``TfLiteXNNPackDelegateCreate``), which runs the openWakeWord feature models about five times
cheaper than TFLite's reference kernels; operations XNNPACK does not support stay on TFLite's
own kernels.

Guarantees: a model file that is not a valid TFLite flatbuffer is refused with
:class:`TfLiteError` (TFLite verifies it; nothing crashes later), and nothing is printed to
stderr by TFLite while loading. :meth:`Interpreter.close` frees the interpreter, then the
delegate (which must outlive it), then the model; it is idempotent. Not thread-safe: one owner
runs an interpreter, although different interpreters may run in different threads.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import TracebackType

import numpy as np

c_void_p = ctypes.c_void_p
c_int32 = ctypes.c_int32
c_size_t = ctypes.c_size_t

#: TfLiteType values of the tensor types the engines read and write.
FLOAT32, UINT8, INT8 = 1, 3, 9
_NUMPY_TYPES = {FLOAT32: np.float32, UINT8: np.uint8, INT8: np.int8}


class TfLiteError(RuntimeError):
    """A model cannot be loaded or run; the message says why (the caller names the model)."""


class _XNNPackOptions(ctypes.Structure):
    """``TfLiteXNNPackDelegateOptions``, of which only the first field is touched.

    The struct grew over TFLite releases (flags, weights cache, variable ops, a weight-cache
    file …), so it is never built here: the library fills it with its own defaults
    (``TfLiteXNNPackDelegateOptionsDefault``) and only ``num_threads``, its first int32 field
    in every release, is changed. The opaque tail is larger than any release's struct, and
    the struct is returned through memory the caller provides (it is larger than two
    registers on x86-64 and AArch64), so the library writes only its real size into it."""

    _fields_ = [("num_threads", c_int32), ("_rest", ctypes.c_uint8 * 508)]


#: TFLite's error reporter: ``(user_data, format, va_list)``; the va_list is only passed on.
_Reporter = ctypes.CFUNCTYPE(None, c_void_p, ctypes.c_char_p, c_void_p)
# One quiet reporter for every model: TFLite keeps the pointer for the model's lifetime.
_QUIET = _Reporter(lambda _user, _fmt, _args: None)

_SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "TfLiteVersion": ([], ctypes.c_char_p),
    "TfLiteModelCreateFromFileWithErrorReporter": ([ctypes.c_char_p, _Reporter, c_void_p],
                                                   c_void_p),
    "TfLiteModelDelete": ([c_void_p], None),
    "TfLiteInterpreterOptionsCreate": ([], c_void_p),
    "TfLiteInterpreterOptionsDelete": ([c_void_p], None),
    "TfLiteInterpreterOptionsSetNumThreads": ([c_void_p, c_int32], None),
    "TfLiteInterpreterOptionsAddDelegate": ([c_void_p, c_void_p], None),
    "TfLiteInterpreterOptionsSetErrorReporter": ([c_void_p, _Reporter, c_void_p], None),
    "TfLiteXNNPackDelegateOptionsDefault": ([], _XNNPackOptions),
    "TfLiteXNNPackDelegateCreate": ([ctypes.POINTER(_XNNPackOptions)], c_void_p),
    "TfLiteXNNPackDelegateDelete": ([c_void_p], None),
    "TfLiteInterpreterCreate": ([c_void_p, c_void_p], c_void_p),
    "TfLiteInterpreterDelete": ([c_void_p], None),
    "TfLiteInterpreterGetInputTensorCount": ([c_void_p], c_int32),
    "TfLiteInterpreterGetInputTensor": ([c_void_p, c_int32], c_void_p),
    "TfLiteInterpreterGetOutputTensor": ([c_void_p, c_int32], c_void_p),
    "TfLiteInterpreterResizeInputTensor": ([c_void_p, c_int32, ctypes.POINTER(c_int32),
                                            c_int32], ctypes.c_int),
    "TfLiteInterpreterAllocateTensors": ([c_void_p], ctypes.c_int),
    "TfLiteInterpreterInvoke": ([c_void_p], ctypes.c_int),
    "TfLiteTensorType": ([c_void_p], ctypes.c_int),
    "TfLiteTensorNumDims": ([c_void_p], c_int32),
    "TfLiteTensorDim": ([c_void_p, c_int32], c_int32),
    "TfLiteTensorByteSize": ([c_void_p], c_size_t),
    "TfLiteTensorCopyFromBuffer": ([c_void_p, c_void_p, c_size_t], ctypes.c_int),
    "TfLiteTensorCopyToBuffer": ([c_void_p, c_void_p, c_size_t], ctypes.c_int),
}


class QuantParams(ctypes.Structure):
    """``TfLiteQuantizationParams``: real = scale · (q − zero_point)."""

    _fields_ = [("scale", ctypes.c_float), ("zero_point", c_int32)]


_LIBS: dict[Path, ctypes.CDLL] = {}


def bundled_library() -> Path:
    """The TFLite C library that pyopen-wakeword ships in its wheel."""
    import pyopen_wakeword

    lib_dir = Path(pyopen_wakeword.__file__).parent / "lib"
    found = sorted(lib_dir.glob("*tensorflowlite_c.*"))
    if not found:
        raise TfLiteError(f"no TFLite C library in {lib_dir} (pyopen-wakeword incomplete?)")
    return found[0]


def library(path: Path | None = None) -> ctypes.CDLL:
    """The TFLite C library at ``path`` (default: :func:`bundled_library`), loaded once, with
    the signatures this module uses declared on its own handle (other users of the same
    library, such as pyopen-wakeword, keep theirs)."""
    path = (path or bundled_library()).resolve()
    lib = _LIBS.get(path)
    if lib is None:
        lib = ctypes.CDLL(str(path), mode=os.RTLD_GLOBAL)
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = args
            fn.restype = res
        # Quantisation parameters come back by value (a small struct).
        lib.TfLiteTensorQuantizationParams.argtypes = [c_void_p]
        lib.TfLiteTensorQuantizationParams.restype = QuantParams
        _LIBS[path] = lib
    return lib


def version() -> str:
    """The TFLite release of the bundled library, e.g. ``"2.17.1"``."""
    return library().TfLiteVersion().decode()


def load_model(path: Path, lib: ctypes.CDLL | None = None) -> int:
    """A TFLite model handle for ``path``; raises :class:`TfLiteError` if the file is not a
    valid TFLite flatbuffer. TFLite verifies the file (a corrupt one would crash it later)
    and reports why to a quiet reporter: the caller says it in one line."""
    lib = lib or library()
    handle = lib.TfLiteModelCreateFromFileWithErrorReporter(
        str(path.resolve()).encode("utf-8"), _QUIET, None
    )
    if not handle:
        raise TfLiteError(f"{path} is not a valid TFLite model")
    return handle


def is_tflite_model(path: Path) -> bool:
    """Whether ``path`` holds a valid TFLite flatbuffer (loaded and freed again)."""
    lib = library()
    try:
        handle = load_model(path, lib)
    except TfLiteError:
        return False
    lib.TfLiteModelDelete(handle)
    return True


class Interpreter:
    """One model, ready to run: tensors allocated, inputs resized if asked.

    ``xnnpack``: run through the XNNPACK delegate (operations it lacks stay on TFLite's
    kernels). ``threads``: threads of TFLite's kernels and of the delegate's thread pool; 1
    runs everything on the calling thread (XNNPACK then creates no pool at all).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        xnnpack: bool = True,
        threads: int = 1,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self._interpreter: int | None = None
        self._delegate: int | None = None
        self._model: int | None = None
        self.lib = lib = library()
        self.path = model_path
        self.xnnpack = xnnpack
        self._input_shape = input_shape
        self._model = load_model(model_path, lib)
        try:
            self._create(threads, input_shape)
        except BaseException:
            self.close()
            raise

    def _create(self, threads: int, input_shape: tuple[int, ...] | None) -> None:
        lib = self.lib
        options = lib.TfLiteInterpreterOptionsCreate()
        try:
            lib.TfLiteInterpreterOptionsSetNumThreads(options, threads)
            lib.TfLiteInterpreterOptionsSetErrorReporter(options, _QUIET, None)
            if self.xnnpack:
                xnn = lib.TfLiteXNNPackDelegateOptionsDefault()
                xnn.num_threads = threads
                self._delegate = lib.TfLiteXNNPackDelegateCreate(ctypes.byref(xnn))
                if not self._delegate:
                    raise TfLiteError(f"{self.path}: the XNNPACK delegate cannot be created")
                lib.TfLiteInterpreterOptionsAddDelegate(options, self._delegate)
            # The interpreter copies what it needs from the options (not the delegate).
            self._interpreter = lib.TfLiteInterpreterCreate(self._model, options)
        finally:
            lib.TfLiteInterpreterOptionsDelete(options)
        if not self._interpreter:
            raise TfLiteError(f"{self.path}: TFLite cannot create an interpreter for it")
        if input_shape is not None:
            dims = (c_int32 * len(input_shape))(*input_shape)
            if lib.TfLiteInterpreterResizeInputTensor(self._interpreter, 0, dims,
                                                      len(input_shape)) != 0:
                raise TfLiteError(f"{self.path}: cannot resize its input to {input_shape}")
        if lib.TfLiteInterpreterAllocateTensors(self._interpreter) != 0:
            raise TfLiteError(f"{self.path}: TFLite cannot allocate its tensors")
        if lib.TfLiteInterpreterGetInputTensorCount(self._interpreter) < 1:
            raise TfLiteError(f"{self.path}: the model has no input")
        self.input = lib.TfLiteInterpreterGetInputTensor(self._interpreter, 0)
        self.output = lib.TfLiteInterpreterGetOutputTensor(self._interpreter, 0)
        if not self.input or not self.output:
            raise TfLiteError(f"{self.path}: the model has no input or no output tensor")
        self.input_shape = _shape(lib, self.input)
        self.output_shape = _shape(lib, self.output)
        self.input_type = lib.TfLiteTensorType(self.input)
        self.output_type = lib.TfLiteTensorType(self.output)
        self._in_bytes = lib.TfLiteTensorByteSize(self.input)
        self._out_bytes = lib.TfLiteTensorByteSize(self.output)
        self._invoke = lib.TfLiteInterpreterInvoke
        self._copy_in = lib.TfLiteTensorCopyFromBuffer
        self._copy_out = lib.TfLiteTensorCopyToBuffer

    def input_quantization(self) -> QuantParams:
        return self.lib.TfLiteTensorQuantizationParams(self.input)

    def output_quantization(self) -> QuantParams:
        return self.lib.TfLiteTensorQuantizationParams(self.output)

    def output_buffer(self) -> np.ndarray:
        """A new array the size and type of the output tensor, to pass to :meth:`run`."""
        dtype = _NUMPY_TYPES.get(self.output_type)
        if dtype is None:
            raise TfLiteError(f"{self.path}: unsupported output type {self.output_type}")
        return np.empty(self.output_shape, dtype=dtype)

    def run(self, x: np.ndarray, out: np.ndarray) -> None:
        """Run the model on ``x`` (C-contiguous, exactly the input tensor's size and type)
        and write its output into ``out`` (from :meth:`output_buffer`)."""
        if x.nbytes != self._in_bytes or out.nbytes != self._out_bytes:
            raise ValueError(f"{self.path}: input of {x.nbytes} bytes (wants {self._in_bytes}), "
                             f"output of {out.nbytes} bytes (gives {self._out_bytes})")
        if not (x.flags.c_contiguous and out.flags.c_contiguous):
            raise ValueError(f"{self.path}: input and output buffers must be C-contiguous")
        self.run_at(x.ctypes.data, out.ctypes.data)

    def run_at(self, in_address: int, out_address: int) -> None:
        """:meth:`run` on the addresses of buffers the caller keeps alive, C-contiguous and
        of the right sizes (the engines' fixed buffers, whose addresses they take once:
        ``ndarray.ctypes`` costs more than a small model's inference)."""
        if self._copy_in(self.input, in_address, self._in_bytes) != 0:
            raise TfLiteError(f"{self.path}: cannot set the input")
        if self._invoke(self._interpreter) != 0:
            raise TfLiteError(f"{self.path}: inference failed")
        self._copy_out(self.output, out_address, self._out_bytes)

    def reload(self, threads: int) -> None:
        """A fresh interpreter for the same model: every internal state (the variables of a
        streaming model) back to its initial value."""
        self._free_interpreter()
        self._create(threads, self._input_shape)

    def _free_interpreter(self) -> None:
        if getattr(self, "_interpreter", None):
            self.lib.TfLiteInterpreterDelete(self._interpreter)
            self._interpreter = None
        if getattr(self, "_delegate", None):
            self.lib.TfLiteXNNPackDelegateDelete(self._delegate)
            self._delegate = None

    def close(self) -> None:
        """Free the interpreter, the delegate, then the model. Idempotent."""
        self._free_interpreter()
        if getattr(self, "_model", None):
            self.lib.TfLiteModelDelete(self._model)
            self._model = None

    def __enter__(self) -> Interpreter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _shape(lib: ctypes.CDLL, tensor: int) -> tuple[int, ...]:
    return tuple(lib.TfLiteTensorDim(tensor, i) for i in range(lib.TfLiteTensorNumDims(tensor)))
