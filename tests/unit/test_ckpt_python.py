#!/usr/bin/python3
"""C writes, Python reads, and back: deploy/python/gppm.py against the C
checkpoint code (common/ckpt.c) through the tests/unit/ckpt_sample program.

    /usr/bin/python3 tests/unit/test_ckpt_python.py BUILD/tests/unit/ckpt_sample
"""

import collections
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "deploy", "python"))
import gppm  # noqa: E402

SAMPLE = None   # path of the ckpt_sample executable, from argv


def run_sample(*args, check=True):
    p = subprocess.run([SAMPLE] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("ckpt_sample %s failed (%d): %s"
                             % (" ".join(args), p.returncode, p.stderr.decode()))
    return p


def fix_crc(b):
    """Recompute the trailer CRC of edited checkpoint bytes."""
    b = bytearray(b)
    struct.pack_into("<I", b, len(b) - 8, zlib.crc32(bytes(b[:-8])) & 0xFFFFFFFF)
    return bytes(b)


class CkptPython(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="test_ckpt_python.")
        cls.path = os.path.join(cls.tmp.name, "sample.gppm")
        p = run_sample(cls.path)
        cls.expected = json.loads(p.stdout)
        with open(cls.path, "rb") as f:
            cls.raw = f.read()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assert_matches_expected(self, doc, tensors, expected=None):
        expected = expected or self.expected
        self.assertEqual(doc, json.loads(expected["json"]))
        self.assertEqual(list(tensors), [t["name"] for t in expected["tensors"]])
        for t in expected["tensors"]:
            arr = tensors[t["name"]]
            self.assertEqual(arr.dtype, np.dtype("<f4"), t["name"])
            self.assertEqual(list(arr.shape), t["dims"], t["name"])
            self.assertEqual(arr.reshape(-1).view("<u4").tolist(), t["bits"], t["name"])

    def test_sample_has_what_we_expect(self):
        # guards against a vacuous comparison: the fixture really has the
        # assorted shapes and the special values
        names = [t["name"] for t in self.expected["tensors"]]
        self.assertIn("optim/fc1.weight", names)
        dims = {t["name"]: t["dims"] for t in self.expected["tensors"]}
        self.assertEqual(dims["temperature"], [])
        self.assertEqual(len(dims["aux.w8"]), 8)
        bias = next(t for t in self.expected["tensors"] if t["name"] == "fc1.bias")
        self.assertIn(0x7fa5a5a5, bias["bits"])       # NaN with payload
        self.assertIn(0x80000000, bias["bits"])       # -0
        self.assertTrue(self.expected["has_optim"])

    def test_load_matches_c_writer(self):
        doc, tensors = gppm.load(self.path)
        self.assert_matches_expected(doc, tensors)
        self.assertEqual(doc["meta"]["note"], "na\u00efve caf\u00e9 \u2713")
        self.assertEqual(doc["network"]["layers"][0]["name"], "conv1")

    def test_raw_layout(self):
        raw = self.raw
        self.assertEqual(raw[:8], b"GPPM\r\n\x1a\n")
        version, flags, json_len, n, data_offset = struct.unpack_from("<IIIIQ", raw, 8)
        self.assertEqual((version, flags), (1, 1))
        self.assertEqual(raw[32:32 + json_len], self.expected["json"].encode("utf-8"))
        self.assertEqual(n, len(self.expected["tensors"]))
        self.assertEqual(data_offset % 64, 0)
        self.assertEqual(raw[-4:], b"MPPG")
        self.assertEqual(struct.unpack_from("<I", raw, len(raw) - 8)[0],
                         zlib.crc32(raw[:-8]) & 0xFFFFFFFF)

    def test_python_writer_is_byte_identical(self):
        doc, tensors = gppm.loads(self.raw)
        # the document as the C program stored it, verbatim
        self.assertEqual(gppm.dumps(self.expected["json"], tensors), self.raw)

    def test_c_reads_python_writer(self):
        doc, tensors = gppm.load(self.path)
        out = os.path.join(self.tmp.name, "from_python.gppm")
        gppm.save(out, doc, tensors)            # the dict is re-serialised by json
        self.assertEqual(os.listdir(self.tmp.name).count("from_python.gppm.tmp.%d" % os.getpid()),
                         0)
        p = run_sample("--read", out)
        got = json.loads(p.stdout)
        self.assertEqual(json.loads(got["json"]), json.loads(self.expected["json"]))
        self.assertEqual(got["tensors"], self.expected["tensors"])
        self.assertTrue(got["has_optim"])
        # and the C reader's view of the C file is what the writer printed
        p = run_sample("--read", self.path)
        self.assertEqual(json.loads(p.stdout), self.expected)

    def test_c_reads_python_fixture_without_optim(self):
        rng = np.random.default_rng(5)
        tensors = collections.OrderedDict([
            ("fc.weight", rng.standard_normal((3, 7)).astype(np.float32)),
            ("fc.bias", np.arange(3, dtype=np.float64)),          # converted to float32
            ("s", np.float32(2.25)),                              # a scalar
        ])
        doc = {"format": "gppm", "network": {"layers": [{"type": "fc", "name": "fc", "out": 3}]},
               "meta": {}, "state": {"step": 1}}
        out = os.path.join(self.tmp.name, "fixture.gppm")
        gppm.save(out, doc, tensors)
        got = json.loads(run_sample("--read", out).stdout)
        self.assertFalse(got["has_optim"])
        self.assertEqual(json.loads(got["json"]), doc)
        self.assertEqual([t["name"] for t in got["tensors"]], ["fc.weight", "fc.bias", "s"])
        self.assertEqual(got["tensors"][0]["dims"], [3, 7])
        self.assertEqual(got["tensors"][0]["bits"],
                         tensors["fc.weight"].reshape(-1).view("<u4").tolist())
        self.assertEqual(got["tensors"][1]["bits"],
                         np.arange(3, dtype="<f4").view("<u4").tolist())
        self.assertEqual(got["tensors"][2]["dims"], [])
        self.assertEqual(got["tensors"][2]["bits"], [np.float32(2.25).view("<u4").item()])

    def test_every_truncation_refused(self):
        raw = self.raw
        for k in range(len(raw)):
            with self.assertRaises(ValueError, msg="length %d" % k) as cm:
                gppm.loads(raw[:k])
            self.assertIn("truncated", str(cm.exception), "length %d" % k)
        with self.assertRaisesRegex(ValueError, "checkpoint truncated: tensor 'optim/fc1.bias' "
                                    "data ends at"):
            gppm.loads(raw[:-12])
        # the C reader refuses the same cut file
        cut = os.path.join(self.tmp.name, "cut.gppm")
        with open(cut, "wb") as f:
            f.write(raw[:-12])
        p = run_sample("--read", cut, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"checkpoint truncated: tensor 'optim/fc1.bias' data ends at", p.stderr)

    def test_every_byte_flip_refused(self):
        raw = bytearray(self.raw)
        for i in range(len(raw)):
            raw[i] ^= 0xFF
            with self.assertRaises(ValueError, msg="flip at %d" % i):
                gppm.loads(raw)
            raw[i] ^= 0xFF
        gppm.loads(raw)   # restored: loads again
        raw[len(raw) - 30] ^= 1
        with self.assertRaisesRegex(ValueError, "checksum mismatch"):
            gppm.loads(raw)

    def test_load_names_the_file(self):
        bad = os.path.join(self.tmp.name, "bad.gppm")
        with open(bad, "wb") as f:
            f.write(self.raw[:100])
        with self.assertRaisesRegex(ValueError, "bad.gppm: checkpoint truncated"):
            gppm.load(bad)

    def test_version_and_magic(self):
        b = bytearray(self.raw)
        struct.pack_into("<I", b, 8, 2)
        with self.assertRaisesRegex(ValueError, r"checkpoint version 2 is newer than this "
                                    r"reader understands \(1\)"):
            gppm.loads(fix_crc(b))
        with self.assertRaisesRegex(ValueError, "bad magic"):
            gppm.loads(b"\x89PNG\r\n\x1a\n" + self.raw[8:])

    def test_inconsistent_tables_refused(self):
        doc = {"network": {}}
        good = gppm.dumps(doc, {"a": np.zeros((2, 3), np.float32), "b": np.ones(5, np.float32)})
        gppm.loads(good)
        json_len = struct.unpack_from("<I", good, 16)[0]
        t0 = 32 + json_len
        # entry a: u16 len, "a", dtype, ndim, dims[2], offset, nbytes
        a_dtype, a_ndim, a_off, a_nbytes = t0 + 3, t0 + 4, t0 + 5 + 16, t0 + 5 + 24
        b0 = t0 + 5 + 32
        b_name, b_off = b0 + 2, b0 + 5 + 8

        def edit(pos, fmt, value):
            e = bytearray(good)
            struct.pack_into(fmt, e, pos, value)
            return fix_crc(e)

        cases = [
            (edit(a_dtype, "<B", 2), "dtype 2 is not supported"),
            (edit(a_ndim, "<B", 9), "ndim 9 exceeds 8"),
            (edit(a_nbytes, "<Q", 20), "nbytes 20 does not match its shape"),
            (edit(a_off, "<Q", 100), "data offset 100 is not 64-byte aligned"),
            (edit(b_off, "<Q", struct.unpack_from("<Q", good, a_off)[0]), "overlaps the previous"),
            (edit(b_off, "<Q", 1 << 20), "runs past the end of the data region"),
            (edit(b_name, "<B", ord("a")), "duplicate tensor name 'a'"),
            (edit(12, "<I", 1), 'no "optim/" tensor'),
        ]
        for data, msg in cases:
            with self.assertRaisesRegex(ValueError, msg):
                gppm.loads(data)
        # the C reader agrees on one of them
        path = os.path.join(self.tmp.name, "dup.gppm")
        with open(path, "wb") as f:
            f.write(cases[6][0])
        p = run_sample("--read", path, check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"duplicate tensor name 'a'", p.stderr)

    def test_invalid_json_refused(self):
        for text, msg in [(b'{"network":{}', "not valid JSON"), (b"[1]", "not an object"),
                          (b'{"network":1}', 'no "network" object'),
                          (b'{"network":{"x":"\xff"}}', "invalid byte 0xff at offset 17"),
                          (b'{"network":{"x":NaN}}', "not valid JSON"),
                          (b'{"network":{"x":"a\x01"}}', "invalid byte 0x01 at offset 18")]:
            n = len(text)
            pad = (-(32 + n)) % 64
            raw = (struct.pack("<8sIIIIQ", gppm.MAGIC, 1, 0, n, 0, 32 + n + pad) + text
                   + bytes(pad))
            raw = fix_crc(raw + bytes(4) + b"MPPG")
            with self.assertRaisesRegex(ValueError, msg):
                gppm.loads(raw)
            with self.assertRaises(ValueError):
                gppm.dumps(text, {})

    def test_save_refuses_bad_input(self):
        with self.assertRaisesRegex(ValueError, "duplicate|not printable"):
            gppm.dumps({"network": {}}, {"caf\u00e9": np.zeros(1)})
        with self.assertRaisesRegex(ValueError, "zero dimension"):
            gppm.dumps({"network": {}}, {"a": np.zeros((2, 0))})
        with self.assertRaisesRegex(ValueError, "ndim 9 exceeds 8"):
            gppm.dumps({"network": {}}, {"a": np.zeros((1,) * 9)})
        with self.assertRaisesRegex(ValueError, "1..255"):
            gppm.dumps({"network": {}}, {"n" * 256: np.zeros(1)})
        with self.assertRaisesRegex(ValueError, 'no "network" object'):
            gppm.dumps({"meta": {}}, {})

    def test_state_dict_into_torch(self):
        import torch
        sd = gppm.state_dict(self.path)
        self.assertIsInstance(sd, collections.OrderedDict)
        self.assertFalse(any(k.startswith("optim/") for k in sd))
        self.assertEqual(list(sd), [t["name"] for t in self.expected["tensors"]
                                    if not t["name"].startswith("optim/")])
        for t in self.expected["tensors"]:
            if t["name"].startswith("optim/"):
                continue
            v = sd[t["name"]]
            self.assertEqual(v.dtype, torch.float32)
            self.assertEqual(list(v.shape), t["dims"])
            self.assertEqual(v.reshape(-1).view(torch.int32).numpy().view("<u4").tolist(),
                             t["bits"])

        # the names are PyTorch's: a matching module takes the state dict
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = torch.nn.Conv2d(1, 4, 3)
                self.bn1 = torch.nn.BatchNorm2d(4)
                self.fc1 = torch.nn.Linear(36, 10)

        net = Net()
        res = net.load_state_dict(sd, strict=False)
        self.assertEqual(res.missing_keys, [])   # bn fills num_batches_tracked itself
        self.assertEqual(set(res.unexpected_keys), {"temperature", "aux.w6", "aux.w8"})
        self.assertTrue(torch.equal(net.conv1.weight.detach(), sd["conv1.weight"]))
        self.assertTrue(torch.equal(net.bn1.running_var, sd["bn1.running_var"]))
        # and a state dict goes back into a checkpoint
        out = os.path.join(self.tmp.name, "from_torch.gppm")
        gppm.save(out, {"network": {}}, {k: v for k, v in net.state_dict().items()
                                         if v.dtype == torch.float32})
        _, back = gppm.load(out)
        self.assertTrue(np.array_equal(back["fc1.weight"], net.fc1.weight.detach().numpy()))

    def test_cli_summary(self):
        p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "..", "..", "deploy",
                                                             "python", "gppm.py"), self.path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        self.assertIn("conv1", out)
        self.assertIn("softmax-cross-entropy", out)
        self.assertIn("[10, 36]", out)
        params = sum(int(np.prod(t["dims"])) for t in self.expected["tensors"]
                     if t["name"].endswith((".weight", ".bias")) and "/" not in t["name"])
        self.assertIn("parameters: %d " % params, out)
        bad = os.path.join(self.tmp.name, "cli-bad.gppm")
        with open(bad, "wb") as f:
            f.write(self.raw[:50])
        p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "..", "..", "deploy",
                                                             "python", "gppm.py"), bad],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"truncated", p.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.stderr.write("usage: %s CKPT_SAMPLE_EXE [unittest args]\n" % sys.argv[0])
        sys.exit(2)
    SAMPLE = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
