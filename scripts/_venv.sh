# Shared by scripts/serve and scripts/test: a project virtualenv in .venv, kept in step
# with pyproject.toml. Usage: ensure_venv [EXTRAS]
ensure_venv() {
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "jitgate needs Python 3.11 or newer (found $(python3 --version 2>&1))" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv >/dev/null 2>&1; then
    # Debian and Ubuntu ship venv (and ensurepip) in a package of their own.
    rm -rf .venv
    local pkg sudo=""
    pkg="python3.$(python3 -c 'import sys; print(sys.version_info[1])')-venv"
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing $pkg (python3 -m venv needs it)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" \
      || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv .venv
  fi
  stamp=".venv/.jitgate-installed${extras:+-$extras}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
    touch "$stamp"
  fi
}
