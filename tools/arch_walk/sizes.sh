#!/usr/bin/env bash
# Module sizes at a commit (issue 20's closing note): how many .py modules under common/,
# services/ and cli/, how many over 400 and over 250 lines, and the five largest.
# Reads the commit with git (no checkout). Usage: tools/arch_walk/sizes.sh REV [REPO]
set -euo pipefail
rev="$1"
cd "${2:-.}"
git ls-tree -r --name-only "$rev" -- common services cli | grep '\.py$' | while read -r f; do
  printf '%d %s\n' "$(git show "$rev:$f" | wc -l)" "$f"
done | sort -n > "/tmp/sizes.$$"
echo "$rev ($(git rev-parse --short "$rev")): $(wc -l < "/tmp/sizes.$$") modules," \
  "over 400 lines: $(awk '$1 > 400' "/tmp/sizes.$$" | wc -l)," \
  "over 250 lines: $(awk '$1 > 250' "/tmp/sizes.$$" | wc -l)"
echo "largest five:"; tail -5 "/tmp/sizes.$$" | sort -rn | sed 's/^/  /'
rm -f "/tmp/sizes.$$"
