# Shared by scripts/serve and scripts/test: a project virtualenv in .venv, kept in step
# with pyproject.toml. Usage: ensure_venv [EXTRAS]
ensure_venv() {
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "jitgate needs Python 3.11 or newer (found $(python3 --version 2>&1))" >&2
    exit 1
  fi
  [ -x .venv/bin/python ] || python3 -m venv .venv
  stamp=".venv/.jitgate-installed${extras:+-$extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
  fi
}
