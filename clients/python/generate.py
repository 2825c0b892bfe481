#!/usr/bin/env python3
"""Generates the Python stubs in src/jobstatus/v1/ from ../../proto with
grpcio-tools (messages, type hints and gRPC stubs). The output is committed;
`generate.py --check` regenerates into a temporary directory and fails if
the committed files differ (CI runs it, as web/ checks its TypeScript).

Needs the grpcio-tools version pinned in pyproject.toml's `dev` extra:
another version writes other code.
"""

import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO = "jobstatus/v1/jobstatus.proto"
OUT = HERE / "src"
GENERATED = ["jobstatus/__init__.py", "jobstatus/v1/__init__.py",
             "jobstatus/v1/jobstatus_pb2.py", "jobstatus/v1/jobstatus_pb2.pyi",
             "jobstatus/v1/jobstatus_pb2_grpc.py"]
HEADER = "# Generated from proto/ by clients/python/generate.py. Do not edit.\n"


def generate(out: Path) -> None:
    well_known = resources.files("grpc_tools") / "_proto"
    (out / "jobstatus" / "v1").mkdir(parents=True, exist_ok=True)
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / PROTO),
    ])
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    for package in ["jobstatus/__init__.py", "jobstatus/v1/__init__.py"]:
        (out / package).write_text(HEADER)


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp)
            generate(fresh)
            stale = [name for name in GENERATED
                     if not (OUT / name).exists()
                     or not filecmp.cmp(fresh / name, OUT / name, shallow=False)]
            if stale:
                sys.exit("generated code is stale, run clients/python/generate.py: "
                         + ", ".join(stale))
        print("generated code matches proto/")
        return
    shutil.rmtree(OUT / "jobstatus", ignore_errors=True)
    generate(OUT)
    print(f"wrote {', '.join(GENERATED)} under {OUT}")


if __name__ == "__main__":
    main()
