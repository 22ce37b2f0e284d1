"""Generate the Python code for protos/ into libs/proto (with .pyi stubs), or check it is current.

`--check` generates into a temporary folder and fails when any file differs from the committed one.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
# The top-level packages generated from protos/: tsmesh's own contract and Prometheus remote-write.
PACKAGES = ("tsmesh", "prometheus")


def generate(out: Path) -> None:
    """Run protoc with the python, grpc and mypy plugins over every .proto file."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    # The mypy plugins are console scripts installed beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for package_dir in {(out / p).parent for p in protos}:
        for parent in [package_dir, *package_dir.relative_to(out).parents]:
            init = out / parent / "__init__.py" if parent != Path(".") else None
            if init is not None and not init.exists():
                init.write_text("")
        (package_dir / "py.typed").touch()


def generated_files(root: Path) -> set[Path]:
    """The generated files under ``root``'s packages, relative to ``root``."""
    return {
        p.relative_to(root)
        for package in PACKAGES
        for p in (root / package).rglob("*")
        if p.is_file() and (p.name.endswith(GENERATED_SUFFIXES) or p.name in ("__init__.py", "py.typed"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    if not args.check:
        for stale in generated_files(out):
            (out / stale).unlink()
        generate(out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want = generated_files(fresh)
        have = generated_files(out)
        drift = sorted(str(p) for p in want ^ have)
        drift += sorted(str(p) for p in want & have if not filecmp.cmp(fresh / p, out / p, shallow=False))
        if drift:
            sys.exit("generated code is stale, run `make protos`: " + ", ".join(drift))
    for package in PACKAGES:
        shutil.rmtree(out / package / "__pycache__", ignore_errors=True)
    print("generated code matches protos/")


if __name__ == "__main__":
    main()
