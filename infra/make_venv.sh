#!/usr/bin/env bash
# Make the virtual environment at $1 with $PYTHON (default python3), or make it again
# when an earlier try left one that cannot work, then stop: installing is the caller's.
#
# Why not `test -d VENV || python3 -m venv VENV`: on Debian and Ubuntu without the
# python3-venv package, `python3 -m venv` fails after it has made the folder (bin/python,
# no pip). Every later `make` then skipped the creation and failed with
# "No module named pip", even once python3-venv was installed, until the folder was
# removed by hand. A venv made by a Python older than Spool's (3.11) stuck the same way:
# pip refused the install at every run, even with PYTHON=python3.11.
# So a venv counts only if its python is 3.11 or newer and runs pip; any other is
# remade (--clear), and a $PYTHON that is too old is refused before anything is made.
#
# PYTHON_GIVEN=1 (the Makefile sets it when PYTHON came from the command line or the
# environment): the venv must also be of $PYTHON's version (major.minor), else it is
# remade with it. `PYTHON=python3.12 make run` over a .venv of 3.11 kept the 3.11
# one without a word. Not given, a usable venv stays on whichever Python made it.
#
# `make_venv.sh --stale VENV` (the Makefile runs it as it reads the file, when PYTHON
# is given): removes VENV's install stamps (.installed*) when the venv is not of
# $PYTHON's version, so make runs the recipe (and this script) again: with the stamps
# newer than pyproject.toml, make had nothing to do. Prints nothing on stdout.
set -euo pipefail
VERSION='import sys; print("%d.%d" % sys.version_info[:2])'
version_of() { "$1" -c "$VERSION" 2>/dev/null || true; }
# Only a $PYTHON that can make Spool's venv replaces one: an exported PYTHON naming
# something else (node-gyp's PYTHON=python2, say) leaves a working .venv alone.
replaces() { case "$2" in 3.*) [ "${2#3.}" -ge 11 ] && [ "$1" != "$2" ] ;; *) false ;; esac; }

if [ "${1:-}" = "--stale" ]; then
  VENV="${2:?usage: infra/make_venv.sh --stale VENV_DIR}"
  if [ -x "$VENV/bin/python" ] \
    && replaces "$(version_of "$VENV/bin/python")" "$(version_of "${PYTHON:-python3}")"; then
    rm -f "$VENV"/.installed*
  fi
  exit 0
fi

VENV="${1:?usage: infra/make_venv.sh VENV_DIR}"
PYTHON="${PYTHON:-python3}"
USABLE='import sys, pip; sys.exit(sys.version_info < (3, 11))'

reason="no pip, or a Python older than 3.11"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$USABLE" >/dev/null 2>&1; then
  have="$(version_of "$VENV/bin/python")"
  want="$(version_of "$PYTHON")"
  if [ "${PYTHON_GIVEN:-}" != 1 ] || ! replaces "$have" "$want"; then
    exit 0
  fi
  reason="Python $have, not the $want of PYTHON=$PYTHON"
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "make: no '$PYTHON' on PATH: install Python 3.11 or newer, or name one with PYTHON=python3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "make: Spool needs Python 3.11 or newer; '$PYTHON' is $("$PYTHON" -V 2>&1): name a newer one with PYTHON=python3.11" >&2
  exit 1
fi
if [ -e "$VENV" ]; then
  case "$reason" in
    Python*) echo "make: $VENV is $reason: making it again" >&2 ;;
    *) echo "make: $VENV cannot be used ($reason): making it again" >&2 ;;
  esac
fi
if ! "$PYTHON" -m venv --clear "$VENV"; then
  echo "make: '$PYTHON -m venv' failed: on Debian or Ubuntu install python3-venv (apt-get install python3-venv), then run make again" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "$USABLE" >/dev/null 2>&1; then
  echo "make: $VENV has no pip: on Debian or Ubuntu install python3-venv (apt-get install python3-venv), then run make again" >&2
  exit 1
fi
