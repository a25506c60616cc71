#!/usr/bin/env bash
# Put WordNet 3.0 where NLTK looks for it (DEST/corpora/wordnet) without nltk.download():
# from Debian's wordnet-base and wordnet-sense-index packages (apt-get, as root, only when they
# are not installed yet). Debian lacks NLTK's `lexnames` file; it is rebuilt from the
# lexnames(5WN) man page (or, where man pages are filtered out, from the same table below).
# Without root or apt-get nothing fails: the METEOR metric then uses exact+stem matching and
# its signature says `wordnet:none`.
#
#   bash scripts/install_wordnet.sh .venv/nltk_data      (what `make install` runs)
set -euo pipefail
dest="${1:?usage: install_wordnet.sh DEST   (e.g. .venv/nltk_data)}"
target="$dest/corpora/wordnet"
source_dir=/usr/share/wordnet
manpage=/usr/share/man/man5/lexnames.5WN.gz

if [ -s "$target/lexnames" ] && [ -s "$target/data.noun" ]; then
  echo "install_wordnet: already in $target"
  exit 0
fi

if [ ! -f "$source_dir/data.noun" ] || [ ! -f "$source_dir/index.sense" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_wordnet: WordNet is not installed and installing it needs root and apt-get;"
    echo "  METEOR will use exact+stem matching (signature wordnet:none). To add it:"
    echo "  sudo apt-get install wordnet-base wordnet-sense-index && bash $0 $dest"
    exit 0
  fi
  echo "install_wordnet: apt-get install wordnet-base wordnet-sense-index"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index; } \
      >/tmp/install_wordnet.log 2>&1; then
    echo "install_wordnet: apt-get failed (see /tmp/install_wordnet.log);"
    echo "  METEOR will use exact+stem matching (signature wordnet:none)"
    exit 0
  fi
fi

mkdir -p "$target"
find "$source_dir" -maxdepth 1 -type f -exec cp {} "$target/" \;

# NLTK's lexnames: "NN<TAB>name<TAB>syntactic category (1 noun, 2 verb, 3 adj, 4 adv)".
lexnames_table() {
  if [ -f "$manpage" ]; then
    # The man page's table rows are "NN<TAB>name<TAB>description".
    zcat "$manpage" | awk -F'\t' '/^[0-9][0-9]\t/ { gsub(/ +$/, "", $2); print $1 "\t" $2 }'
  else
    i=0
    for name in adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact \
      noun.attribute noun.body noun.cognition noun.communication noun.event noun.feeling \
      noun.food noun.group noun.location noun.motive noun.object noun.person noun.phenomenon \
      noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape \
      noun.state noun.substance noun.time verb.body verb.change verb.cognition \
      verb.communication verb.competition verb.consumption verb.contact verb.creation \
      verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative \
      verb.weather adj.ppl; do
      printf '%02d\t%s\n' "$i" "$name"
      i=$((i + 1))
    done
  fi
}
lexnames_table | awk -F'\t' '{
  split($2, part, ".")
  category = (part[1] == "noun") ? 1 : (part[1] == "verb") ? 2 : (part[1] == "adj") ? 3 : 4
  printf "%s\t%s\t%d\n", $1, $2, category
}' >"$target/lexnames.tmp"
if [ "$(wc -l <"$target/lexnames.tmp")" != 45 ]; then
  echo "install_wordnet: could not build lexnames (expected 45 lines); WordNet left out" >&2
  rm -rf "$target"
  exit 0
fi
mv "$target/lexnames.tmp" "$target/lexnames"
echo "install_wordnet: WordNet 3.0 in $target"
