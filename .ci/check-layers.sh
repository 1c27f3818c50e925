#!/usr/bin/env bash
# Checks that the runtime's top-level modules depend on each other in one direction only.
#
# Every `crate::x` a module names (in `use` lines, grouped `use crate::{a, b::c}` included, and in
# paths written inline) is an edge from that module to `x`. A module may name only modules of its
# own layer or of a lower one; within a layer, only the edges listed in SAME_LAYER. Test modules
# are checked like the rest. Keep ARCHITECTURE.md ("Layers") in step with this list.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=runar-runtime/src

# Lowest first. Each line is one layer.
LAYERS=(
  "error wire lock coop" # errors, the generated protocol messages, the one lock helper,
                         # tokio's cooperative budget in steps
  "log_limit"         # rate limits for log lines a peer can trigger
  "value metadata"    # Value: typed in memory or encoded; request and event metadata
  "routing"           # TopicPath, PathTrie
  "identity"          # NodeId, NodeKeypair
  "seal"              # sealed fields: envelopes, label keys, KeyResolver; knows values and node ids
  "policy"            # access policies: rules on subjects (node ids), accesses and path patterns
  "discovery"         # reports peers; knows identity, nothing of the node
  "network"           # admission, transport, framing, mesh; NodeHandler is its interface upward
  "node"              # the node; inside it, node/registry (what routes where) and node/service
                      # (AbstractService and the contexts, which are handles on their node)
  "codegen"           # the one module generated code uses
  "fuzzing"           # entry points for the fuzz targets (feature `fuzzing`); may name any module
)
# Edges allowed inside a layer (none: each top-level module depends only on lower layers).
SAME_LAYER=""

declare -A layer_of
for i in "${!LAYERS[@]}"; do
  for m in ${LAYERS[$i]%%#*}; do layer_of[$m]=$i; done
done

# The top-level modules: a directory with mod.rs, or a file, under src/ (lib.rs is the root).
modules=()
for path in "$SRC"/*; do
  name=$(basename "$path" .rs)
  [[ $name == lib ]] && continue
  modules+=("$name")
  if [[ -z ${layer_of[$name]+x} ]]; then
    echo "check-layers: module \`$name\` is in no layer: add it to LAYERS in $0" >&2
    exit 1
  fi
done

# Names the crate root re-exports (`crate::Error` is error's Error).
declare -A root_name
while read -r name module; do root_name[$name]=$module; done < <(
  perl -0777 -ne '
    s{//[^\n]*}{}g;
    while (/pub use (\w+)::\{([^}]*)\}/g) { my $m=$1; for (split /,/, $2) { print "$1 $m\n" if /(\w+)\s*$/ } }
    while (/pub use (\w+)::(\w+);/g) { print "$2 $1\n" }
  ' "$SRC/lib.rs")

# The modules each module names: "from to" lines.
edges() {
  local module=$1 files
  if [[ -d $SRC/$module ]]; then files=$(find "$SRC/$module" -name '*.rs'); else files=$SRC/$module.rs; fi
  # shellcheck disable=SC2086
  perl -0777 -ne '
    s{//[^\n]*}{}g;                      # comments (doc links are not dependencies)
    s{"(?:[^"\\]|\\.)*"}{""}g;           # string literals
    # Grouped imports: the first name of each top-level item in `crate::{...}`.
    while (/crate::\{/g) {
      my ($depth, $item, $start) = (1, "", pos);
      my $i = $start;
      while ($depth > 0 && $i < length) {
        my $c = substr($_, $i++, 1);
        if ($c eq "{") { $depth++ } elsif ($c eq "}") { $depth-- }
        if ($depth == 1 && $c eq ",") { print "$1\n" if $item =~ /^\s*(\w+)/; $item = ""; next }
        $item .= $c if $depth >= 1;
      }
      print "$1\n" if $item =~ /^\s*(\w+)/;
    }
    while (/crate::(\w+)/g) { print "$1\n" }
  ' $files | sort -u
}

fail=0
declare -A graph
for from in "${modules[@]}"; do
  for name in $(edges "$from"); do
    to=$name
    [[ -n ${root_name[$name]+x} ]] && to=${root_name[$name]}
    [[ -z ${layer_of[$to]+x} || $to == "$from" ]] && continue
    [[ " ${graph[$from]:-} " == *" $to "* ]] || graph[$from]+=" $to"
    if [[ $from == network || $from == discovery ]] && [[ $to == node ]]; then
      echo "check-layers: $from/ names crate::$name: the network and discovery know nothing of the node, registry or services (add what they need to network/interface.rs)" >&2
      fail=1
    elif (( layer_of[$to] > layer_of[$from] )); then
      echo "check-layers: $from names crate::$name, a higher layer ($to); allowed order, lowest first: $(IFS='|'; echo "${LAYERS[*]}")" >&2
      fail=1
    elif (( layer_of[$to] == layer_of[$from] )) && [[ " $SAME_LAYER " != *" $from>$to "* ]]; then
      echo "check-layers: $from names crate::$name in its own layer; allowed there: $SAME_LAYER" >&2
      fail=1
    fi
  done
done

# Inside the node: the registry stores handlers (node/service) and knows nothing else of the node.
if inner=$(grep -rhoE 'crate::node::[a-z_]+' "$SRC/node/registry" | sort -u | grep -v '^crate::node::\(registry\|service\)$'); then
  echo "check-layers: node/registry names $inner: the registry knows only the handler types of node/service" >&2
  fail=1
fi

# Cycles other than the listed same-layer edges would already have failed above; report the graph
# on failure so the fix is easy to see.
if (( fail )); then
  for from in "${modules[@]}"; do echo "  $from ->${graph[$from]:-}" >&2; done
  exit 1
fi
echo "check-layers: ok (${#modules[@]} modules)"
