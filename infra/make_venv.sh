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
set -euo pipefail
VENV="${1:?usage: infra/make_venv.sh VENV_DIR}"
PYTHON="${PYTHON:-python3}"
USABLE='import sys, pip; sys.exit(sys.version_info < (3, 11))'

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$USABLE" >/dev/null 2>&1; then
  exit 0
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
  echo "make: $VENV cannot be used (no pip, or a Python older than 3.11): making it again" >&2
fi
if ! "$PYTHON" -m venv --clear "$VENV"; then
  echo "make: '$PYTHON -m venv' failed: on Debian or Ubuntu install python3-venv (apt-get install python3-venv), then run make again" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "$USABLE" >/dev/null 2>&1; then
  echo "make: $VENV has no pip: on Debian or Ubuntu install python3-venv (apt-get install python3-venv), then run make again" >&2
  exit 1
fi
