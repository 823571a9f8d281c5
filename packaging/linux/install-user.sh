#!/usr/bin/env bash
# Install the unpacked relman folder for the current user, no root needed:
#   ~/.local/opt/relman (the app), ~/.local/bin/relman (a link), a menu entry and icons.
# Run from inside the unpacked tarball. Uninstall: ./install-user.sh --uninstall
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PREFIX=${PREFIX:-$HOME/.local}
DEST=$PREFIX/opt/relman
if [ "${1:-}" = "--uninstall" ]; then
  rm -rf "$DEST" "$PREFIX/bin/relman" "$PREFIX/share/applications/relman.desktop"
  find "$PREFIX/share/icons/hicolor" -name 'relman.*' -delete 2>/dev/null || true
  echo "relman removed from $PREFIX"; exit 0
fi
mkdir -p "$PREFIX/opt" "$PREFIX/bin" "$PREFIX/share/applications"
rm -rf "$DEST" && cp -a "$HERE" "$DEST"
ln -sfn "$DEST/relman" "$PREFIX/bin/relman"
sed "s|^Exec=relman|Exec=$DEST/relman|" "$HERE/share/applications/relman.desktop" > "$PREFIX/share/applications/relman.desktop"
cp -a "$HERE/share/icons" "$PREFIX/share/"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$PREFIX/share/applications" || true
echo "relman installed in $DEST; run 'relman' (make sure $PREFIX/bin is on PATH) or use the menu entry"
