#!/usr/bin/python3
"""Read and write gppd checkpoints (``.gppm``) from Python.

A ``.gppm`` file holds the network description as JSON plus named float32
tensors (parameters, batch-norm running statistics and, optionally,
optimiser state under ``optim/<parameter name>``), protected by a CRC-32.
The byte layout is documented in ``include/gpp/ckpt.h``; this module makes
the same checks as the C reader and writes the same bytes as the C writer.

Needs only the standard library and numpy; PyTorch is imported lazily by
:func:`state_dict`.

The JSON document is ``{"format": "gppm", "network": {...}, "meta": {...},
"state": {...}}``.  One ``meta`` key has a fixed meaning: ``"normalize":
{"mean": [m_0, ...], "std": [s_0, ...]}``, the per-channel mean and standard
deviation of x / 255 the network was trained with (one number per input
channel, or one for all).  The ONNX export (``gpp-worker export``,
include/gpp/export.h) and ``gpp_torch.from_gppm`` put ``(x - mean) / std``
in front of the network when it is present, so their models take pixels in
[0, 1]; without it they apply no normalisation.

Usage::

    import gppm
    doc, tensors = gppm.load("stage-03-prune.gppm")   # dict, {name: np.ndarray}
    sd = gppm.state_dict("stage-03-prune.gppm")        # OrderedDict of torch tensors
    gppm.save("copy.gppm", doc, tensors)

    python3 gppm.py FILE.gppm                          # print a summary
"""

import collections
import json
import os
import re
import struct
import sys
import zlib

import numpy as np

__all__ = ["load", "loads", "save", "dumps", "state_dict", "summary", "VERSION"]

MAGIC = b"GPPM\r\n\x1a\n"
END_MARKER = b"MPPG"
VERSION = 1
HEADER_SIZE = 32
TRAILER_SIZE = 8
ALIGN = 64
FLAG_OPTIM = 0x1
DTYPE_F32 = 1
MAX_NDIM = 8
NAME_MAX = 255
MAX_JSON = 16 << 20
MAX_TENSORS = 65536
MAX_FILE = 16 << 30
MAX_COUNT = MAX_FILE // 4
OPTIM_PREFIX = "optim/"

_HEADER = struct.Struct("<8sIIIIQ")      # magic, version, flags, json_len, n_tensors, data_offset
_MIN_ENTRY = 21                          # u16 len, 1-byte name, dtype, ndim, offset, nbytes
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _align(n):
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _name_repr(raw):
    """A printable rendering of a (possibly hostile) name for messages."""
    out = []
    for i, ch in enumerate(raw):
        if i == 64:
            out.append("...")
            break
        if 0x20 <= ch < 0x7F and ch not in (0x5C, 0x27):
            out.append(chr(ch))
        else:
            out.append("\\x%02x" % ch)
    return "".join(out)


def _check_json_text(raw):
    """Decode and check the JSON document like the C reader does: strict
    UTF-8, no control characters other than tab/newline/CR, an object with
    an object member "network".  Returns the parsed dict."""
    if not raw:
        raise ValueError("checkpoint JSON document is empty")
    try:
        text = bytes(raw).decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise ValueError("checkpoint JSON document has an invalid byte 0x%02x at offset %d "
                         "(must be UTF-8 without control characters)"
                         % (raw[e.start], e.start)) from None
    bad = _CONTROL.search(text)
    if bad:
        off = len(text[:bad.start()].encode("utf-8"))
        raise ValueError("checkpoint JSON document has an invalid byte 0x%02x at offset %d "
                         "(must be UTF-8 without control characters)" % (ord(bad.group()), off))

    def no_constant(name):
        raise ValueError("checkpoint JSON document is not valid JSON (%s)" % name)

    try:
        doc = json.loads(text, parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise ValueError("checkpoint JSON document is not valid JSON (%s)" % e) from None
    except RecursionError:
        raise ValueError("checkpoint JSON document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValueError("checkpoint JSON document is not an object")
    if not isinstance(doc.get("network"), dict):
        raise ValueError('checkpoint JSON document has no "network" object')
    return doc


def _parse_table(buf, json_len, n, data_offset, limit, diagnose):
    """Parse the tensor table at [32 + json_len, data_offset): a list of
    (name, dims, offset, count).  Tensor data must end by `limit` (the
    trailer); with `diagnose` the file is known to be cut at `limit` and the
    first tensor past it is reported as truncated."""
    pos = HEADER_SIZE + json_len
    end = data_offset
    if n * _MIN_ENTRY > end - pos:
        raise ValueError("checkpoint tensor table of %d entries cannot fit in the %d bytes "
                         "between the JSON and the data region" % (n, end - pos))
    entries = []
    prev_end = data_offset
    for i in range(n):
        if end - pos < 4:
            raise ValueError("checkpoint tensor table entry %d runs into the data region at %d"
                             % (i, end))
        (nl,) = struct.unpack_from("<H", buf, pos)
        if nl == 0 or nl > NAME_MAX:
            raise ValueError("checkpoint tensor %d: name length %d is outside 1..%d"
                             % (i, nl, NAME_MAX))
        if end - pos < 2 + nl + 2:
            raise ValueError("checkpoint tensor table entry %d runs into the data region at %d"
                             % (i, end))
        raw = bytes(buf[pos + 2:pos + 2 + nl])
        rep = _name_repr(raw)
        for ch in raw:
            if not 0x20 <= ch <= 0x7E:
                raise ValueError("checkpoint tensor %d: name '%s' has byte 0x%02x "
                                 "(names are printable ASCII)" % (i, rep, ch))
        pos += 2 + nl
        dtype, ndim = buf[pos], buf[pos + 1]
        pos += 2
        if dtype != DTYPE_F32:
            raise ValueError("checkpoint tensor '%s': dtype %d is not supported "
                             "(only 1 = float32)" % (rep, dtype))
        if ndim > MAX_NDIM:
            raise ValueError("checkpoint tensor '%s': ndim %d exceeds %d" % (rep, ndim, MAX_NDIM))
        if end - pos < 8 * ndim + 16:
            raise ValueError("checkpoint tensor table entry %d runs into the data region at %d"
                             % (i, end))
        dims = struct.unpack_from("<%dQ" % ndim, buf, pos)
        pos += 8 * ndim
        offset, nbytes = struct.unpack_from("<QQ", buf, pos)
        pos += 16
        count = 1
        for d, dim in enumerate(dims):
            if dim == 0:
                raise ValueError("checkpoint tensor '%s': dims[%d] is 0" % (rep, d))
            count *= dim
        if count > MAX_COUNT:
            raise ValueError("checkpoint tensor '%s': the product of its dims overflows the "
                             "16 GiB limit" % rep)
        if nbytes != 4 * count:
            raise ValueError("checkpoint tensor '%s': nbytes %d does not match its shape "
                             "(%d elements x 4 bytes)" % (rep, nbytes, count))
        if offset % ALIGN:
            raise ValueError("checkpoint tensor '%s': data offset %d is not 64-byte aligned"
                             % (rep, offset))
        if offset < data_offset:
            raise ValueError("checkpoint tensor '%s': data offset %d is before the data region "
                             "at %d" % (rep, offset, data_offset))
        if offset < prev_end:
            raise ValueError("checkpoint tensor '%s': data at %d overlaps the previous tensor, "
                             "which ends at %d" % (rep, offset, prev_end))
        if offset + nbytes > limit:
            if diagnose:
                raise ValueError("checkpoint truncated: tensor '%s' data ends at %d but file "
                                 "is %d bytes" % (rep, offset + nbytes, limit))
            raise ValueError("checkpoint tensor '%s': data [%d, %d) runs past the end of the "
                             "data region at %d" % (rep, offset, offset + nbytes, limit))
        prev_end = offset + nbytes
        entries.append((raw.decode("ascii"), tuple(int(d) for d in dims), offset, count))
    return entries


def loads(buf):
    """Parse checkpoint bytes (bytes, bytearray or memoryview).

    Returns ``(doc, tensors)``: the JSON document as a dict and an ordered
    dict ``{name: numpy.ndarray}`` of float32 arrays in file order (scalars
    have shape ``()``).  The arrays share memory with a private bytearray
    copy of ``buf`` and are writable.  Raises ValueError naming what is
    wrong for a truncated, corrupt, wrong-version or inconsistent file.
    """
    buf = bytearray(buf)
    n = len(buf)
    minimum = HEADER_SIZE + TRAILER_SIZE
    if buf[:8] != MAGIC[:min(n, 8)]:
        raise ValueError('not a gppm checkpoint: bad magic bytes (expected "GPPM\\r\\n\\x1a\\n")')
    if n >= 12:
        (version,) = struct.unpack_from("<I", buf, 8)
        if version > VERSION:
            raise ValueError("checkpoint version %d is newer than this reader understands (%d)"
                             % (version, VERSION))
        if version != VERSION:
            raise ValueError("checkpoint version %d is not valid (this reader reads version %d)"
                             % (version, VERSION))
    if n < minimum:
        raise ValueError("checkpoint truncated: %d bytes, shorter than the %d-byte header and "
                         "trailer" % (n, minimum))
    if n > MAX_FILE:
        raise ValueError("checkpoint is %d bytes, over the 16 GiB limit" % n)
    _, version, flags, json_len, n_tensors, data_offset = _HEADER.unpack_from(buf, 0)
    if flags & ~FLAG_OPTIM:
        raise ValueError("checkpoint flags 0x%x have unknown bits set" % flags)
    if json_len > MAX_JSON:
        raise ValueError("checkpoint JSON length %d exceeds the 16 MiB limit" % json_len)
    if n_tensors > MAX_TENSORS:
        raise ValueError("checkpoint tensor count %d exceeds the limit of %d"
                         % (n_tensors, MAX_TENSORS))
    table_start = HEADER_SIZE + json_len
    trailer = n - TRAILER_SIZE
    if data_offset % ALIGN:
        raise ValueError("checkpoint data offset %d is not 64-byte aligned" % data_offset)
    if data_offset < table_start:
        raise ValueError("checkpoint data offset %d is inside the JSON document, which ends at %d"
                         % (data_offset, table_start))
    if data_offset > trailer:
        raise ValueError("checkpoint truncated: data region starts at %d but file is %d bytes"
                         % (data_offset, n))
    if buf[n - 4:] != END_MARKER:
        try:
            _parse_table(buf, json_len, n_tensors, data_offset, n, True)
        except ValueError as e:
            if str(e).startswith("checkpoint truncated"):
                raise
        raise ValueError('checkpoint truncated or corrupt: end marker "MPPG" missing from the '
                         "last 4 of %d bytes" % n)
    (stored,) = struct.unpack_from("<I", buf, trailer)
    computed = zlib.crc32(memoryview(buf)[:trailer]) & 0xFFFFFFFF
    if stored != computed:
        raise ValueError("checkpoint checksum mismatch: stored CRC-32 %08x, computed %08x "
                         "(the file is corrupt)" % (stored, computed))
    doc = _check_json_text(buf[HEADER_SIZE:HEADER_SIZE + json_len])
    entries = _parse_table(buf, json_len, n_tensors, data_offset, trailer, False)
    names = [e[0] for e in entries]
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError("checkpoint has a duplicate tensor name '%s'"
                             % _name_repr(name.encode("ascii")))
        seen.add(name)
    has_optim = any(name.startswith(OPTIM_PREFIX) for name in names)
    if bool(flags & FLAG_OPTIM) != has_optim:
        if has_optim:
            raise ValueError('checkpoint has "optim/" tensors but the optimiser-state flag '
                             "is clear")
        raise ValueError('checkpoint flags say optimiser state is present but no "optim/" '
                         "tensor is")
    tensors = collections.OrderedDict()
    for name, dims, offset, count in entries:
        arr = np.frombuffer(buf, dtype="<f4", count=count, offset=offset)
        tensors[name] = arr.reshape(dims)
    return doc, tensors


def load(path):
    """Load the checkpoint at `path`: ``(doc, tensors)`` as for :func:`loads`.

    Raises ValueError for a bad file and OSError when it cannot be read.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE:
            raise ValueError("checkpoint '%s' is %d bytes, over the 16 GiB limit" % (path, size))
        data = f.read()
    try:
        return loads(data)
    except ValueError as e:
        raise ValueError("%s: %s" % (path, e)) from None


def _as_f32(name, value):
    if hasattr(value, "detach"):            # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise ValueError("tensor '%s': dtype %s cannot be stored as float32" % (name, arr.dtype))
    arr = np.asarray(arr, dtype="<f4", order="C")     # keeps 0-d arrays 0-d
    if arr.ndim > MAX_NDIM:
        raise ValueError("tensor '%s': ndim %d exceeds %d" % (name, arr.ndim, MAX_NDIM))
    if any(d == 0 for d in arr.shape):
        raise ValueError("tensor '%s': shape %s has a zero dimension" % (name, arr.shape))
    return arr


def dumps(doc, tensors):
    """Serialise a checkpoint to bytes.

    `doc` is the JSON document: a dict (dumped compactly, UTF-8) or a str /
    bytes holding JSON text (stored verbatim, so a document read from a C
    checkpoint round-trips byte for byte).  It must be an object with an
    object member "network".  `tensors` maps names (1..255 printable ASCII
    characters) to array-likes (numpy arrays, torch tensors, lists) stored as
    float32, in the mapping's order.  Names starting with "optim/" are
    optimiser state and set flag bit 0.  Raises ValueError for bad input.
    """
    if isinstance(doc, dict):
        raw = json.dumps(doc, ensure_ascii=False, allow_nan=False,
                         separators=(",", ":")).encode("utf-8")
    elif isinstance(doc, str):
        raw = doc.encode("utf-8")
    elif isinstance(doc, (bytes, bytearray)):
        raw = bytes(doc)
    else:
        raise ValueError("doc must be a dict or JSON text, not %s" % type(doc).__name__)
    if len(raw) > MAX_JSON:
        raise ValueError("checkpoint JSON is %d bytes, over the 16 MiB limit" % len(raw))
    _check_json_text(raw)
    items = list(tensors.items())
    if len(items) > MAX_TENSORS:
        raise ValueError("checkpoint has more than %d tensors" % MAX_TENSORS)
    table = bytearray()
    arrays = []
    seen = set()
    for name, value in items:
        if not isinstance(name, str):
            raise ValueError("tensor name %r is not a str" % (name,))
        if any(not 0x20 <= ord(ch) <= 0x7E for ch in name):
            raise ValueError("tensor name %r is not printable ASCII" % name)
        nb = name.encode("ascii")
        if not 1 <= len(nb) <= NAME_MAX:
            raise ValueError("tensor name '%s' must be 1..%d characters" % (name, NAME_MAX))
        if name in seen:
            raise ValueError("duplicate tensor name '%s'" % name)
        seen.add(name)
        arrays.append((nb, _as_f32(name, value)))
    pos = HEADER_SIZE + len(raw)
    for nb, arr in arrays:
        pos += 2 + len(nb) + 2 + 8 * arr.ndim + 16
    data_offset = _align(pos)
    pos = data_offset
    offsets = []
    for nb, arr in arrays:
        pos = _align(pos)
        offsets.append(pos)
        pos += arr.nbytes
    total = pos + TRAILER_SIZE
    if total > MAX_FILE:
        raise ValueError("checkpoint would exceed the 16 GiB limit")
    for (nb, arr), off in zip(arrays, offsets):
        table += struct.pack("<H", len(nb)) + nb + struct.pack("<BB", DTYPE_F32, arr.ndim)
        table += struct.pack("<%dQ" % arr.ndim, *arr.shape)
        table += struct.pack("<QQ", off, arr.nbytes)
    flags = FLAG_OPTIM if any(nb.startswith(OPTIM_PREFIX.encode()) for nb, _ in arrays) else 0
    out = bytearray(total)
    _HEADER.pack_into(out, 0, MAGIC, VERSION, flags, len(raw), len(arrays), data_offset)
    out[HEADER_SIZE:HEADER_SIZE + len(raw)] = raw
    t0 = HEADER_SIZE + len(raw)
    out[t0:t0 + len(table)] = table
    for (nb, arr), off in zip(arrays, offsets):
        out[off:off + arr.nbytes] = arr.tobytes()
    crc = zlib.crc32(memoryview(out)[:total - TRAILER_SIZE]) & 0xFFFFFFFF
    struct.pack_into("<I4s", out, total - TRAILER_SIZE, crc, END_MARKER)
    return bytes(out)


def save(path, doc, tensors):
    """Write a checkpoint to `path` atomically (a temporary file in the same
    directory, fsync, rename, fsync the directory), as the C writer does.
    Arguments as for :func:`dumps`."""
    data = dumps(doc, tensors)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def state_dict(path):
    """Load the checkpoint at `path` as a PyTorch state dict: an OrderedDict
    of torch.float32 tensors, in file order, holding the parameters and
    buffers ("conv1.weight", "bn1.running_mean", ...; the names of
    include/gpp/netdesc.h, which PyTorch modules share).  Optimiser state
    and any other name with a "/" is left out.  Raises ImportError when
    PyTorch is not installed."""
    try:
        import torch
    except ImportError as e:
        raise ImportError("gppm.state_dict needs PyTorch (Debian: apt install python3-torch); "
                          "gppm.load works without it") from e
    _, tensors = load(path)
    out = collections.OrderedDict()
    for name, arr in tensors.items():
        if "/" in name:
            continue
        out[name] = torch.from_numpy(arr)
    return out


def summary(doc, tensors):
    """A human-readable summary of a loaded checkpoint (a str)."""
    lines = []
    net = doc.get("network", {})
    layers = net.get("layers", []) if isinstance(net, dict) else []
    head = "network:"
    if "input" in net:
        head += " input %s" % (net["input"],)
    if "classes" in net:
        head += ", %s classes" % (net["classes"],)
    lines.append(head)
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            continue
        extra = ", ".join("%s=%s" % (k, layer[k]) for k in ("out", "k", "stride", "pad", "p")
                          if k in layer)
        lines.append("  %-20s %-22s %s" % (layer.get("name", "#%d" % i), layer.get("type", "?"),
                                           extra))
    for key in ("meta", "state"):
        if isinstance(doc.get(key), dict) and doc[key]:
            lines.append("%s: %s" % (key, json.dumps(doc[key], ensure_ascii=False)))
    lines.append("tensors: %d" % len(tensors))
    params = buffers = optim = 0
    for name, arr in tensors.items():
        lines.append("  %-32s %-18s %d" % (name, list(arr.shape), arr.size))
        if name.startswith(OPTIM_PREFIX) or "/" in name:
            optim += arr.size
        elif name.endswith(".weight") or name.endswith(".bias"):
            params += arr.size
        else:
            buffers += arr.size
    lines.append("parameters: %d (weights and biases)" % params)
    lines.append("buffers: %d values (running stats and others)" % buffers)
    lines.append("optimiser state: %d values" % optim)
    return "\n".join(lines)


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write("usage: %s FILE.gppm\n" % argv[0])
        return 2
    try:
        doc, tensors = load(argv[1])
    except (ValueError, OSError) as e:
        sys.stderr.write("gppm: %s\n" % e)
        return 1
    print(summary(doc, tensors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
