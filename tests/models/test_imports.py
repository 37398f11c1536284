"""The models package is pure torch: no training framework, no geospatial library."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import stsun_lightning

FORBIDDEN = ["lightning", "pytorch_lightning", "torchgeo", "rasterio", "pandas"]
SRC = str(Path(stsun_lightning.__file__).parents[1])


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_importing_the_models_package_loads_no_framework_or_geospatial_library():
    result = _run(
        f"""
        import json, sys
        import stsun_lightning.models
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in {FORBIDDEN!r} or m.startswith("stsun_lightning.data")
        )
        print(json.dumps(loaded))
        """
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_models_package_runs_where_none_of_them_is_installed():
    """A meta-path finder refuses the imports, as in an environment without them."""
    result = _run(
        f"""
        import sys

        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {FORBIDDEN!r} or name.startswith("stsun_lightning.data"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}")
                return None

        sys.meta_path.insert(0, NotInstalled())
        for name in [m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r}]:
            del sys.modules[name]
        try:
            import pandas  # the finder must be what refuses it
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the blocker did not block")

        import torch
        from stsun_lightning.batch import Batch, Modality
        from stsun_lightning.models import create_model

        torch.manual_seed(0)
        model = create_model("stsun_tiny", categories=["water", "cropland"]).eval()
        b, t, c, h, w = 1, 2, 3, 24, 40
        batch = Batch(
            image=torch.randn(b, t, c, h, w),
            wavelength_nm=torch.tensor([[490.0, 560.0, 665.0]]),
            bandwidth_nm=torch.tensor([[65.0, 35.0, 30.0]]),
            modality=torch.full((b, c), int(Modality.OPTICAL)),
            band_mask=torch.ones(b, t, c, dtype=torch.bool),
            gsd_m=torch.tensor([10.0]),
            dates=torch.tensor([[19000.0, 19030.0]]),
            time_mask=torch.ones(b, t, dtype=torch.bool),
            valid_mask=torch.ones(b, h, w, dtype=torch.bool),
            task=torch.tensor([0]),
            outputs=torch.tensor([[[1.0, 0.0, 1.0]]]),
            categories=torch.tensor([[0, 1]]),
            category_mask=torch.ones(b, 2, dtype=torch.bool),
            source=["plain"],
        ).validate()
        with torch.no_grad():
            logits = model(batch).logits
        assert logits.shape == (1, 1, 2, h, w) and bool(torch.isfinite(logits).all())
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
