#!/usr/bin/env python3
"""crosscheck.py — show that tiny_adapter.bin (written by the C writer in
tests/unit/test_torchbin.c) is what torch.save would write, without needing torch.

It rebuilds data.pkl with CPython's own pickler, driving it the way torch.save does
(protocol 2, persistent_id -> ('storage', torch.<T>Storage, key, 'cpu', numel),
tensors reduced to torch._utils._rebuild_tensor_v2(..., False, OrderedDict())), with
stand-in classes registered under torch's module names, and compares the bytes. It also
checks that Python's zipfile reads the archive (ZIP64 end record, CRCs, stored members,
64-byte aligned data). Usage: python3 tests/data/torchbin/crosscheck.py [file.bin]
"""
import collections
import io
import pickle
import sys
import types
import zipfile

torch = types.ModuleType("torch")
utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, utils


def stand_in(mod, name, obj):
    obj.__module__, obj.__qualname__, obj.__name__ = mod.__name__, name, name
    setattr(mod, name, obj)
    return obj


BF16 = stand_in(torch, "BFloat16Storage", type("BFloat16Storage", (), {}))
F32 = stand_in(torch, "FloatStorage", type("FloatStorage", (), {}))
rebuild = stand_in(utils, "_rebuild_tensor_v2", lambda *a: a)


class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel


class Tensor:
    def __init__(self, storage, size, stride):
        self.args = (storage, 0, size, stride, False, collections.OrderedDict())

    def __reduce_ex__(self, proto):
        return (rebuild, self.args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/torchbin/tiny_adapter.bin"
    state = {
        "a.lora_A.weight": Tensor(Storage(BF16, str(0), 6), (2, 3), (3, 1)),
        "b.lora_B.weight": Tensor(Storage(F32, str(1), 6), (3, 2), (2, 1)),
    }
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    z = zipfile.ZipFile(path)
    bad = z.testzip()
    mine = z.read("adapter_model/data.pkl")
    ok = mine == buf.getvalue() and bad is None
    raw = open(path, "rb").read()
    for info in z.infolist():  # data starts after the local header's own name and extra field
        h = info.header_offset
        start = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") + int.from_bytes(raw[h + 28:h + 30], "little")
        ok = ok and info.compress_type == zipfile.ZIP_STORED and start % 64 == 0
    print("data.pkl identical to CPython's pickler:", mine == buf.getvalue())
    print("zip members:", [i.filename for i in z.infolist()], "bad CRC:", bad)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
