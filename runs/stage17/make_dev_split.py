"""Stage 17's indoor development split (RULE.md): the houses/ and doordetect/ photos that the
card's pseudo-label step 1 skipped (`--every 2` took the other half), a sixth of them chosen
by a hash of the name, as symlinks under runs/indoor_dev_src for `lgseg pseudo-label`.
A hash, not a stride: houses/ cycles bathroom, bedroom, kitchen, and a stride of 4 or 6 over
the skipped half took bathrooms only."""
import hashlib
from pathlib import Path

root = Path("../shared/datasets/indoor").resolve()
exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
files = sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())
stems = ["__".join(p.relative_to(root).with_suffix("").parts) for p in files]
used = set(Path("runs/pl/indoor/train.txt").read_text().split()) | \
    set(Path("runs/pl/indoor/holdout.txt").read_text().split())
out = Path("runs/indoor_dev_src")
n = 0
for s, p in zip(stems, files):
    if s in used or s.split("__")[0] not in ("houses", "doordetect"):
        continue
    if int(hashlib.sha1(("dev:" + s).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < 1 / 6:
        d = out / p.relative_to(root).parent
        d.mkdir(parents=True, exist_ok=True)
        (d / p.name).symlink_to(p)
        n += 1
print(n, "photos")
