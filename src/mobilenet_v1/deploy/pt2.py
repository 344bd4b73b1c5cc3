"""A PyTorch-native package: ``torch.export`` + AOTInductor (``.pt2``), float32 or bfloat16.

Why not the model as it is: AOTInductor cannot fuse or generate code for convolutions, so
each of Table 1's 27 convolutions becomes one call into oneDNN, which at batch 1 costs
tens of microseconds of weight reordering and primitive lookup per call, more than the
arithmetic of most of MobileNet's small layers (Section 3.2: 95% of the time is in 1x1
convolutions that are tiny at alpha 0.25). The package is therefore compiled from an
equivalent *GEMM form* of the folded network (:class:`GemmForm`), laid out NHWC:

* a 1x1 convolution is one matrix product of the (N*H*W, C) activation, a free view in
  NHWC, with its bias added in the same call (``addmm``);
* a 3x3 depthwise convolution is nine shifted multiply-adds, which Inductor fuses with
  the SAME padding, the bias, ReLU6 and the previous layer's ReLU6 into one vectorized
  C++ loop over the channels;
* a full 3x3 convolution (the stem, Table 4's Conv MobileNet) is its nine shifted
  inputs concatenated along the channels (im2col) times the weight matrix.

docs/deployment.md measures this against the convolution form, freezing,
channels_last and max-autotune. The batch is dynamic; the height and width are the
preprocessing's. The labels and preprocessing travel inside the compiled library
(AOTInductor's ``aot_inductor.metadata``).

A ``.pt2`` holds a native shared library that loading runs, with the rights of the user:
it is code, not data, so loading one is an explicit opt-in (``trust_native_code=True``,
``--trust-native-code`` on the command line), refused in one line without it. Before
PyTorch's loader sees a package, the archive itself is checked as untrusted input (its size,
no absolute, ``..``, symlink or duplicate entries, every CRC, a bounded unpacked size), and
PyTorch extracts it into a private folder that is removed on every exit path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import Preprocessing
from ..files import atomic_write
from ..fold import fuse_bn
from ..model import Conv2dSame, ConvBNAct, MobileNetV1, same_padding
from ..untrusted import printable
from ..weights import LoadedWeights
from .common import (
    FP32_TOLERANCE,
    ExportReport,
    check_metadata,
    compare_with_torch,
    dynamic_shapes,
    loaded_weights,
    metadata_props,
    random_inputs,
)

__all__ = ["BF16_TOLERANCE", "DTYPES", "GemmForm", "Pt2Model", "export_pt2", "load_pt2"]

DTYPES = {"pt2": torch.float32, "pt2-bf16": torch.bfloat16}  # format -> dtype
BF16_TOLERANCE = 0.05  # max |logit diff| / max |logit|: bfloat16 keeps 8 bits of mantissa per layer
MAX_PT2_BYTES = 256 << 20  # a 1.0/224 float32 package is ~20 MB
MAX_UNPACKED_BYTES = 1 << 30  # what extraction may write; a 1.0/224 float32 package unpacks to ~40 MB
MAX_ENTRIES = 4096  # an AOTInductor package holds a few dozen files


class _GemmLayer(nn.Module):
    """One conv + bias + ReLU/ReLU6 of the folded network, on NHWC activations."""

    def __init__(self, layer: ConvBNAct, high: float, dtype: torch.dtype) -> None:
        super().__init__()
        conv = layer.conv
        self.kernel, self.stride = conv.kernel_size[0], conv.stride[0]
        self.same = isinstance(conv, Conv2dSame)
        self.pad = 0 if self.same else conv.padding[0]
        self.depthwise = conv.groups > 1
        self.high = high
        w = conv.weight.detach()
        # depthwise: (C, 1, k, k) -> (k*k, C); dense: (Cout, Cin, k, k) -> (k*k*Cin, Cout), im2col's order
        w = w[:, 0].permute(1, 2, 0).reshape(-1, w.shape[0]) if self.depthwise else w.permute(2, 3, 1, 0)
        self.register_buffer("weight", w.reshape(-1, conv.out_channels).to(dtype).contiguous())
        self.register_buffer("bias", conv.bias.detach().to(dtype).clone())

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The k*k shifted (strided) views of the padded input, row by row."""
        k, s = self.kernel, self.stride
        if self.same:
            (top, bottom), (left, right) = same_padding(x.shape[1], k, s), same_padding(x.shape[2], k, s)
        else:
            top = bottom = left = right = self.pad
        x = F.pad(x, [0, 0, left, right, top, bottom])
        rows, cols = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        return [
            x[:, i : i + (rows - 1) * s + 1 : s, j : j + (cols - 1) * s + 1 : s] for i in range(k) for j in range(k)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise:
            y = self.bias + sum(tap * w for tap, w in zip(self.taps(x), self.weight, strict=True))
        else:
            cols = x if self.kernel == 1 and self.stride == 1 else torch.cat(self.taps(x), dim=-1)
            n, h, w, c = cols.shape
            y = torch.addmm(self.bias, cols.reshape(-1, c), self.weight).reshape(n, h, w, -1)
        return y.clamp(0, self.high)


class GemmForm(nn.Module):
    """The folded ``model`` as NHWC GEMMs and fused depthwise loops (see the module's
    docstring), in ``dtype``: float32 NCHW in, float32 logits out, as the model."""

    def __init__(self, model: MobileNetV1, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        folded = fuse_bn(model)
        high = 6.0 if folded.config.activation == "relu6" else float("inf")
        layers = [m for m in folded.features.modules() if isinstance(m, ConvBNAct)]
        self.layers = nn.Sequential(*(_GemmLayer(m, high, dtype) for m in layers))
        self.classifier = folded.classifier.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x.to(self.dtype).permute(0, 2, 3, 1))
        return self.classifier(x.mean((1, 2))).float()


def _compile(form: GemmForm, path: Path, resolution: int, metadata: dict[str, str]) -> None:
    example = (torch.randn(2, 3, resolution, resolution),)
    with torch.no_grad():
        program = torch.export.export(form, example, dynamic_shapes=dynamic_shapes(False))
        # freezing is left off: it turns each addmm back into a oneDNN call with packed weights
        options = {"aot_inductor.metadata": metadata}
        torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=options)


def export_pt2(
    model: MobileNetV1,
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    labels: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    check_inputs: torch.Tensor | None = None,
) -> ExportReport:
    """``model`` to an AOTInductor package at ``path`` (``.pt2``), dynamic batch, in
    ``dtype`` (float32 or bfloat16: oneDNN's AVX-512 BF16/AMX kernels where the CPU has
    them), compiled for this machine's CPU (minutes for 1.0/224).

    The package is loaded and checked against the folded PyTorch model on
    ``check_inputs`` (default: 4 random images) before it is renamed into place: max
    |logit diff| <= ``FP32_TOLERANCE`` in float32, <= ``BF16_TOLERANCE`` times the largest
    logit in bfloat16; otherwise ``ValueError`` and nothing is written.
    """
    fmt = next((k for k, v in DTYPES.items() if v == dtype), None)
    if fmt is None:
        raise ValueError(f"unsupported pt2 dtype {dtype}; choose torch.float32 or torch.bfloat16")
    if not str(path).endswith(".pt2"):
        raise ValueError(f"an AOTInductor package must be named *.pt2, got {path}")
    form = GemmForm(model, dtype).eval()
    res = preprocessing.resolution
    inputs = check_inputs if check_inputs is not None else random_inputs(res)
    reference = fuse_bn(model)
    meta = metadata_props(preprocessing, labels, reference.config, fmt)
    with atomic_write(path) as tmp:
        _compile(form, tmp, res, meta)
        package = Pt2Model(tmp, metadata=False, trust_native_code=True)  # compiled here, just now
        diff, agree = compare_with_torch(package, reference, inputs)
        with torch.no_grad():
            limit = FP32_TOLERANCE if fmt == "pt2" else BF16_TOLERANCE * float(reference(inputs).abs().max())
        if not diff <= limit:
            raise ValueError(f"exported {fmt} differs from PyTorch: max |logit diff| {diff:.3g} > {limit:.3g}")
    checked = f"{len(inputs)} {'given' if check_inputs is not None else 'random'} inputs"
    return ExportReport(Path(path), fmt, diff, agree, checked)


def _check_package(path: Path) -> None:
    """A bounded, sound zip archive holding an AOTInductor model, else one line: nothing in
    it may be written outside the folder it is extracted to, or beyond a bounded size, and
    every entry must match its CRC (a flipped bit in the library is refused, not run)."""
    if not path.is_file():
        raise FileNotFoundError(f"pt2 package not found: {path}")
    size = path.stat().st_size
    if size > MAX_PT2_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than the {MAX_PT2_BYTES} a MobileNet V1 package can be")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            _check_entries(path, entries)
            bad = archive.testzip()  # reads every entry: bounded by the unpacked size checked above
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        # (RuntimeError: an encrypted entry; NotImplementedError: an unknown compression)
        raise ValueError(f"{path}: not a pt2 package (not a readable zip archive: {type(exc).__name__})") from None
    if bad is not None:
        raise ValueError(f"{path}: entry {printable(bad)!r} is corrupt (its CRC does not match)")
    if not any("/data/aotinductor/" in e.filename and e.filename.endswith(".so") for e in entries):
        raise ValueError(f"{path}: not an AOTInductor package (no compiled model inside)")


def _check_entries(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    """No entry that extraction would write outside its folder, twice, as a link, or past
    :data:`MAX_UNPACKED_BYTES` in all; at most :data:`MAX_ENTRIES` of them."""
    if len(entries) > MAX_ENTRIES:
        raise ValueError(f"{path}: {len(entries)} entries, more than the {MAX_ENTRIES} a package holds")
    seen: set[str] = set()
    total = 0
    for entry in entries:
        name = entry.filename
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or "\\" in name or "\0" in name or ":" in name or ".." in parts:
            raise ValueError(f"{path}: entry {printable(name)!r} would be written outside the extraction folder")
        if stat.S_ISLNK(entry.external_attr >> 16):
            raise ValueError(f"{path}: entry {printable(name)!r} is a symbolic link")
        if name in seen:
            raise ValueError(f"{path}: entry {printable(name)!r} appears twice")
        seen.add(name)
        total += entry.file_size
        if total > MAX_UNPACKED_BYTES:
            raise ValueError(f"{path}: unpacks to more than {MAX_UNPACKED_BYTES} bytes (a zip bomb?)")


@contextlib.contextmanager
def _private_extraction() -> Iterator[None]:
    """PyTorch's loader extracts a package under the temporary folder (``TMPDIR``) and does
    not remove what a failed load leaves: give it a private folder, removed on every exit
    path (the loaded library stays mapped once its file is gone), and keep PyTorch's log
    lines ("Loading outdated pt2 file" on the way to a one-line error, "No CUDA runtime is
    found" as it imports its extension tools) off the terminal."""
    logs = [logging.getLogger(name) for name in ("torch._inductor.package.package", "torch.utils.cpp_extension")]
    levels, previous = [log.level for log in logs], os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="mobilenet-v1-pt2-") as folder:
        os.environ["TMPDIR"] = folder
        for log in logs:
            log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for log, level in zip(logs, levels, strict=True):
                log.setLevel(level)
            if previous is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = previous


class Pt2Model:
    """An AOTInductor package as a ``batch -> logits`` callable, as
    :class:`~mobilenet_v1.deploy.onnx.OnnxModel` is for ONNX Runtime. ``threads`` sets
    PyTorch's intra-op threads (the package runs on them). The compiled model is called
    directly (``boxed_run``): ``aoti_load_package``'s wrapper re-parses its input spec
    on every call, a tenth of a millisecond at batch 1.

    Loading runs the package's native code: without ``trust_native_code=True`` a sound
    package is refused in one line (see the module's docstring)."""

    def __init__(
        self, path: str | Path, threads: int = 2, *, metadata: bool = True, trust_native_code: bool = False
    ) -> None:
        self.path = Path(path)
        _check_package(self.path)
        if trust_native_code is not True:
            raise ValueError(
                f"{self.path} is a pt2 package: native code that loading runs with your rights; "
                "load it only from a source you trust, with trust_native_code=True"
            )
        torch.set_num_threads(threads)
        try:
            with _private_extraction():
                self.package = torch._inductor.aoti_load_package(str(self.path))
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot load pt2 package {self.path}: {printable(reason)}") from None
        # the output's width is not fixed in a package: the config's num_classes says it
        self.metadata = check_metadata(dict(self.package.get_metadata()), None, self.path) if metadata else {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.package.loader.boxed_run([batch.float().contiguous()])[0]


def load_pt2(path: str | Path, threads: int = 2, *, trust_native_code: bool = False) -> tuple[Pt2Model, LoadedWeights]:
    """``(model, info)`` like ``weights.load_weights``, from the package's metadata; loading
    runs its native code, so ``trust_native_code=True`` must say the source is trusted."""
    model = Pt2Model(path, threads, trust_native_code=trust_native_code)
    return model, loaded_weights(model.metadata, path)
