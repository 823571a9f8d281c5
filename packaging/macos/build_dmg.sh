#!/usr/bin/env bash
# macOS: relman.app (PyInstaller BUNDLE from packaging/relman.spec) -> dist/relman-VERSION-macos-ARCH.dmg
# Run on a Mac after:  pyinstaller --noconfirm --distpath dist --workpath build/pyinstaller packaging/relman.spec
# Uses only hdiutil (part of macOS). Optional signing/notarisation: set CODESIGN_IDENTITY (and
# NOTARY_PROFILE for `xcrun notarytool` with a stored keychain profile); without them the .app is
# ad-hoc signed and users open it the first time with right-click > Open.
set -euo pipefail
cd "$(dirname "$0")/../.."
APP=dist/relman.app
[ -d "$APP" ] || { echo "build_dmg.sh: $APP not found; run pyinstaller first" >&2; exit 1; }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' relman/__init__.py)
ARCH=$(uname -m)
DMG=dist/relman-$VERSION-macos-$ARCH.dmg

if [ -n "${CODESIGN_IDENTITY:-}" ]; then
  codesign --force --deep --options runtime --timestamp --sign "$CODESIGN_IDENTITY" "$APP"
else
  codesign --force --deep --sign - "$APP"
fi
# Smoke test of the bundle before packing it: the executable inside the .app is the CLI too.
"$APP/Contents/MacOS/relman" --version

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"   # drag-to-install target in the opened image
rm -f "$DMG"
hdiutil create -volname "relman $VERSION" -srcfolder "$STAGE" -ov -format UDZO "$DMG"
if [ -n "${CODESIGN_IDENTITY:-}" ]; then
  codesign --sign "$CODESIGN_IDENTITY" --timestamp "$DMG"
  if [ -n "${NOTARY_PROFILE:-}" ]; then
    xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
    xcrun stapler staple "$DMG"
  fi
fi
echo "built $DMG ($(du -h "$DMG" | cut -f1))"
