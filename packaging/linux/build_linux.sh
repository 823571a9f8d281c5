#!/usr/bin/env bash
# Linux installers from the one-folder PyInstaller build in dist/relman:
#   dist/relman-VERSION-linux-ARCH.tar.gz   unpack anywhere, run ./relman (or ./install-user.sh)
#   dist/relman_VERSION_ARCH.deb            /opt/relman, /usr/bin/relman, .desktop entry, icons
# Only Debian tools (dpkg-deb, fakeroot not needed with --root-owner-group), no download.
# An AppImage needs appimagetool (a download), so it is not built here; see packaging/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DIST=${DIST:-dist}
APP=$DIST/relman
[ -x "$APP/relman" ] || { echo "build_linux.sh: $APP/relman not found; run pyinstaller first" >&2; exit 1; }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' relman/__init__.py)
ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
UARCH=$(uname -m)
STAGE=build/linux-stage
rm -rf "$STAGE" && mkdir -p "$STAGE"

# --- .tar.gz --------------------------------------------------------------------------------
TGZ_NAME=relman-$VERSION-linux-$UARCH
T=$STAGE/$TGZ_NAME
mkdir -p "$T"
cp -a "$APP"/. "$T"/
mkdir -p "$T/share/applications"
cp packaging/linux/relman.desktop "$T/share/applications/"
for s in 16 24 32 48 64 128 256 512; do
  install -D -m 644 resources/icons/relman-$s.png "$T/share/icons/hicolor/${s}x${s}/apps/relman.png"
done
install -D -m 644 resources/icons/relman.svg "$T/share/icons/hicolor/scalable/apps/relman.svg"
install -m 755 packaging/linux/install-user.sh "$T/install-user.sh"
tar -C "$STAGE" -cf - "$TGZ_NAME" | gzip -${GZIP_LEVEL:-6} > "$DIST/$TGZ_NAME.tar.gz"
echo "built $DIST/$TGZ_NAME.tar.gz ($(du -h "$DIST/$TGZ_NAME.tar.gz" | cut -f1))"

# --- .deb -----------------------------------------------------------------------------------
D=$STAGE/deb
mkdir -p "$D/opt" "$D/usr/bin" "$D/DEBIAN"
cp -a "$APP" "$D/opt/relman"
ln -s ../../opt/relman/relman "$D/usr/bin/relman"
install -D -m 644 packaging/linux/relman.desktop "$D/usr/share/applications/relman.desktop"
for s in 16 24 32 48 64 128 256 512; do
  install -D -m 644 resources/icons/relman-$s.png "$D/usr/share/icons/hicolor/${s}x${s}/apps/relman.png"
done
install -D -m 644 resources/icons/relman.svg "$D/usr/share/icons/hicolor/scalable/apps/relman.svg"
SIZE_KB=$(du -sk "$D" | cut -f1)
# The newest glibc symbol version any bundled library asks for: the bundle runs on that glibc or
# newer (it follows the build machine: build on the oldest distribution you support).
GLIBC_MIN=2.34
if command -v objdump >/dev/null 2>&1; then
  GLIBC_MIN=$(find "$APP" -type f \( -name '*.so*' -o -name relman \) -exec objdump -T {} + 2>/dev/null \
    | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V -u | tail -n 1)
fi
echo "glibc >= $GLIBC_MIN needed"
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE_KB/" -e "s/@GLIBC@/$GLIBC_MIN/" \
  packaging/linux/control.in > "$D/DEBIAN/control"
install -m 755 packaging/linux/postinst "$D/DEBIAN/postinst"
install -m 755 packaging/linux/postinst "$D/DEBIAN/postrm"
DEB=$DIST/relman_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-gzip}" --build "$D" "$DEB" >/dev/null
echo "built $DEB ($(du -h "$DEB" | cut -f1))"
rm -rf "$STAGE"
