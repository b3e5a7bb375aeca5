"""`lgseg node` with a look inside: a daemon thread writes, every 0.2 s, which modules of
torch's family the process has imported into the file named by $LGSEG_MODULE_REPORT
(JSON list). test_node_torch_free.py starts the node through this file, because another
process's sys.modules cannot be read from outside; everything else is the real node."""
import json
import os
import sys
import threading
import time

HEAVY = ("torch", "torchvision", "sentence_transformers", "transformers", "timm", "open_clip")


def _report(path: str) -> None:
    while True:
        loaded = sorted(m for m in list(sys.modules) if m.split(".")[0] in HEAVY)
        with open(path + ".tmp", "w") as f:
            json.dump(loaded, f)
        os.replace(path + ".tmp", path)
        time.sleep(0.2)


if __name__ == "__main__":
    threading.Thread(target=_report, args=(os.environ["LGSEG_MODULE_REPORT"],), daemon=True).start()
    from lgseg_ros.cli import main

    sys.exit(main(["node", *sys.argv[1:]]))
