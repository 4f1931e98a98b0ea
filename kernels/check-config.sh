#!/bin/sh
# check-config.sh CONFIG FRAGMENT
#
# Fails unless every setting of FRAGMENT survived into CONFIG.  Kconfig
# drops a requested option without an error when its dependencies are not
# met, so kernels/Makefile runs this after configuring the kernel.
#   "CONFIG_X=value"         must appear exactly like that in CONFIG;
#   "# CONFIG_X is not set"  CONFIG must not set CONFIG_X to y or m.
set -eu

if [ $# -ne 2 ]; then
	echo "usage: $0 CONFIG FRAGMENT" >&2
	exit 2
fi
config=$1
fragment=$2
bad=0

while IFS= read -r line; do
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

if [ $bad -ne 0 ]; then
	echo "error: $config lacks settings requested by $fragment (listed above)." >&2
	echo "Most likely an option's Kconfig dependencies are not enabled; add them to the fragment." >&2
	exit 1
fi
echo "config check: all settings of $(basename "$fragment") are in $config"
