# Sourced by the bench scripts: installs a missing tool with apt-get (Debian).

# ensure_command <command> <package> <caller>: installs <package> when
# <command> is not on PATH, refreshing the package lists only if the first
# try fails.
ensure_command() {
    local cmd=$1 package=$2 caller=$3
    command -v "$cmd" >/dev/null 2>&1 && return 0
    echo "$caller: $cmd not found, installing $package with apt-get" >&2
    if ! apt-get install -y "$package" >/dev/null 2>&1; then
        apt-get update >/dev/null
        apt-get install -y "$package" >/dev/null
    fi
}
