#!/usr/bin/env bash
# Puts WordNet 3.0 where NLTK looks for it (DEST/corpora/wordnet), offline-friendly: from
# Debian's wordnet-base and wordnet-sense-index packages, not nltk.download(). Debian lacks
# NLTK's `lexnames` file, so it is rebuilt from the lexnames(5WN) man page.
# Without root or apt the METEOR metric falls back to exact+stem matching (its signature says so).
set -euo pipefail
dest="${1:?usage: install_wordnet.sh DEST (e.g. .venv/nltk_data)}"
target="$dest/corpora/wordnet"
[ -s "$target/lexnames" ] && exit 0
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq wordnet-base wordnet-sense-index) >/dev/null 2>&1 \
      || { echo "install_wordnet: apt-get failed; METEOR will use exact+stem matching"; exit 0; }
  else
    echo "install_wordnet: WordNet missing and no root apt-get; METEOR will use exact+stem"
    echo "  (as root: apt-get install wordnet-base wordnet-sense-index, then rerun this)"
    exit 0
  fi
fi
mkdir -p "$target"
find /usr/share/wordnet -maxdepth 1 -type f -exec cp {} "$target/" \;
zcat /usr/share/man/man5/lexnames.5WN.gz | awk -F'\t' '/^[0-9][0-9]\t/ {
  split($2, part, ".")
  category = (part[1] == "noun") ? 1 : (part[1] == "verb") ? 2 : (part[1] == "adj") ? 3 : 4
  printf "%s\t%s\t%d\n", $1, $2, category
}' > "$target/lexnames"
echo "install_wordnet: WordNet 3.0 in $target"
