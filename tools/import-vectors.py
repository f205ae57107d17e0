#!/usr/bin/env python3
"""Copy the Tahoe-LAFS 1.20 / zfec reference vectors the tests use into Tests/Fixtures.

Usage: tools/import-vectors.py [SHARED_VECTORS_DIR]   (default: ../shared/vectors)

The vectors are data produced by running the real Tahoe-LAFS 1.20.0 and zfec 1.6.0.0
(see ../shared/vectors/README.md). The JSON files are copied as they are; of Tahoe's
own test_vectors.yaml the 120 CHK cases are kept, and of its 240 SDMF/MDMF cases each
distinct (format, key, capability) (the capability of a mutable file depends only on
its RSA key), converted to JSON so the tests need no YAML parser.
"""
import json, os, shutil, sys

src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "vectors")
dst = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
os.makedirs(dst, exist_ok=True)
for name in ["zfec.json", "hashtree.json", "hashutil.json", "chk.json", "sdmf.json", "mdmf.json", "dirnode.json"]:
    shutil.copy(os.path.join(src, "tahoe-ref", name), os.path.join(dst, name))

import yaml  # PyYAML, only needed when re-importing
doc = yaml.safe_load(open(os.path.join(src, "tahoe-integration", "test_vectors.yaml")))
chk = [
    {
        "convergence": v["convergence"],
        "seed": v["sample"]["seed"],
        "length": v["sample"]["length"],
        "k": v["zfec"]["required"],
        "n": v["zfec"]["total"],
        "segment_size": v["zfec"]["segmentSize"],
        "expected": v["expected"],
    }
    for v in doc["vector"]
    if v["format"]["kind"] == "chk"
]
with open(os.path.join(dst, "tahoe-integration-chk.json"), "w") as f:
    json.dump({"source": "Tahoe-LAFS 1.20 integration/vectors/test_vectors.yaml (CHK entries)",
               "version": doc.get("version"), "vectors": chk}, f, indent=1)
ssk, seen = [], set()
count = 0
for v in doc["vector"]:
    if v["format"]["kind"] != "ssk":
        continue
    count += 1
    entry = (v["format"]["params"]["format"], v["format"]["params"]["key"], v["expected"])
    if entry not in seen:
        seen.add(entry)
        ssk.append({"format": entry[0], "key": entry[1], "expected": entry[2]})
with open(os.path.join(dst, "tahoe-integration-ssk.json"), "w") as f:
    json.dump({"source": "Tahoe-LAFS 1.20 integration/vectors/test_vectors.yaml (SDMF and MDMF entries, one per distinct key)",
               "version": doc.get("version"), "entries": count, "vectors": ssk}, f, indent=1)
print(f"copied 6 JSON files, {len(chk)} CHK and {count} SDMF/MDMF integration vectors ({len(ssk)} distinct keys) into {os.path.normpath(dst)}")
