#!/usr/bin/env bash
# Builds the Debian package: target/debian/imapgate_<version>-1_<arch>.deb. The release binary,
# then the manual page and completions it generates from its own command-line definition, then
# `cargo deb` (installed with `cargo install cargo-deb --locked` when missing) with the metadata
# in Cargo.toml. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (cargo install --locked)" >&2
  cargo install --locked --quiet cargo-deb
fi
cargo build --release --locked --quiet --bin imapgate
mkdir -p target/assets
bin=target/release/imapgate
$bin man-page | gzip -9n > target/assets/imapgate.8.gz
$bin completions bash > target/assets/imapgate.bash
$bin completions zsh > target/assets/_imapgate
cargo deb --no-build --quiet >&2
ls -t target/debian/imapgate_*.deb | head -1
