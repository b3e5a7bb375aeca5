"""Files shipped with the package (models/, demo/, config/), found the same way whether the
code runs from the source tree (development venv) or from a colcon install space."""
from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[1]


def package_path(relative: str) -> Path | None:
    """`<source root>/<relative>` if it exists, else `<share/lgseg_ros>/<relative>`, else None."""
    source = SOURCE_ROOT / relative
    if source.exists():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        share = Path(get_package_share_directory("lgseg_ros", print_warning=False)) / relative
    except (ImportError, LookupError, ValueError, OSError):
        # No ament_index (plain pip install), package not in AMENT_PREFIX_PATH, or no
        # prefix path at all (no sourced workspace).
        return None
    return share if share.exists() else None
