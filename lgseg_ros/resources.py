"""Files shipped with the package (models/, demo/, config/), found the same way whether the
code runs from the source tree (development venv) or from a colcon install space."""
from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_path(relative: str) -> Path | None:
    """`<share/lgseg_ros>/<relative>` of the ament install space, if it exists there."""
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory("lgseg_ros", print_warning=False)) / relative
    except (ImportError, LookupError, ValueError, OSError):
        # No ament_index (plain pip install), package not in AMENT_PREFIX_PATH
        # (PackageNotFoundError is a LookupError), or no prefix path at all (OSError).
        return None
    return share if share.exists() else None


def package_path(relative: str) -> Path | None:
    """`<source root>/<relative>` if it exists (a checkout), else the share dir's, else None."""
    source = SOURCE_ROOT / relative
    return source if source.exists() else share_path(relative)
