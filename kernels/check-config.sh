#!/bin/sh
# check-config.sh CONFIG FRAGMENT...
#
# Fails unless every setting of the FRAGMENTs survived into CONFIG.  Kconfig
# drops a requested option without an error when its dependencies are not
# met, so kernels/Makefile runs this after configuring the kernel.
#   "CONFIG_X=value"         must appear exactly like that in CONFIG;
#   "# CONFIG_X is not set"  CONFIG must not set CONFIG_X to y or m.
# Fragments are merged in the order given, so a setting is skipped when a
# later fragment names the same option (merge_config.sh lets the last win).
set -eu

if [ $# -lt 2 ]; then
	echo "usage: $0 CONFIG FRAGMENT..." >&2
	exit 2
fi
config=$1
shift
bad=0

# True when a fragment after $1 in the argument list sets option $2.
overridden() {
	after=$1
	option=$2
	shift 2
	later=0
	for f in "$@"; do
		if [ $later -eq 1 ] && grep -qE "^$option=|^# $option is not set\$" "$f"; then
			return 0
		fi
		[ "$f" = "$after" ] && later=1
	done
	return 1
}

for fragment in "$@"; do
	while IFS= read -r line; do
		case $line in
		CONFIG_*=* | "# CONFIG_"*" is not set")
			name=${line#"# "}
			name=${name%%=*}
			name=${name%" is not set"}
			if overridden "$fragment" "$name" "$@"; then
				continue
			fi
			;;
		esac
		case $line in
		CONFIG_*=*)
			if ! grep -qxF -- "$line" "$config"; then
				name=${line%%=*}
				have=$(grep -E "^$name=|^# $name is not set" "$config" || true)
				echo "  wanted: $line    got: ${have:-(absent)}" >&2
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			name=${line#"# "}
			name=${name%" is not set"}
			if grep -qE "^$name=[ym]\$" "$config"; then
				echo "  wanted: $line    got: $(grep -E "^$name=" "$config")" >&2
				bad=1
			fi
			;;
		esac
	done < "$fragment"
done

if [ $bad -ne 0 ]; then
	echo "error: $config lacks settings requested by $* (listed above)." >&2
	echo "Most likely an option's Kconfig dependencies are not enabled; add them to the fragment." >&2
	exit 1
fi
for fragment in "$@"; do
	echo "config check: all settings of $(basename "$fragment") are in $config"
done
