; Inno Setup script for relman on Windows (x64). Build on Windows after PyInstaller:
;   pyinstaller --noconfirm --distpath dist --workpath build\pyinstaller packaging\relman.spec
;   "C:\Program Files (x86)\Inno Setup 6\ISCC.exe" /DAppVersion=0.1.0 packaging\windows\relman.iss
; Output: dist\relman-<version>-windows-x64-setup.exe
; Installs per user by default (no admin needed; the dialog offers "all users"), adds a Start-menu
; entry (windowed launcher relmanw.exe), an optional desktop icon, optionally puts relman.exe (the
; CLI) on PATH, and registers an uninstaller (Settings > Apps). User catalogs are never removed.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define AppName "relman"
#define SrcDir "..\..\dist\relman"

[Setup]
AppId={{7C3B4E1A-52D4-4C8E-9F0B-2E5A6D1C9B31}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=relman maintainers
AppComments=Desktop release manager for machine-learning models (offline)
DefaultDirName={autopf}\relman
DefaultGroupName=relman
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=relman-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\relman.ico
UninstallDisplayIcon={app}\relman.exe
UninstallDisplayName={#AppName} {#AppVersion}
Compression=lzma2/normal
SolidCompression=yes
WizardStyle=modern
ChangesEnvironment=yes

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "Add the relman command line to PATH"; GroupDescription: "Command line:"; Flags: unchecked

[Files]
Source: "{#SrcDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\relman"; Filename: "{app}\relmanw.exe"; IconFilename: "{app}\relman.exe"
Name: "{group}\relman command prompt"; Filename: "{cmd}"; Parameters: "/K ""set PATH={app};%PATH% && relman --help"""; WorkingDir: "{userdocs}"
Name: "{group}\Uninstall relman"; Filename: "{uninstallexe}"
Name: "{autodesktop}\relman"; Filename: "{app}\relmanw.exe"; IconFilename: "{app}\relman.exe"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "Environment"; ValueType: expandsz; ValueName: "Path"; ValueData: "{olddata};{app}"; \
  Tasks: addtopath; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\relmanw.exe"; Description: "Start relman"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; files the app may write next to itself (none by design); catalogs live in the user data folder and stay
Type: filesandordirs; Name: "{app}\__pycache__"

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  OrigPath: string;
begin
  if not RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', OrigPath) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(OrigPath) + ';') = 0;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  OrigPath, Dir: string;
  P: Integer;
begin
  if CurUninstallStep = usPostUninstall then
  begin
    Dir := ExpandConstant('{app}');
    if RegQueryStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', OrigPath) then
    begin
      P := Pos(';' + Uppercase(Dir), Uppercase(OrigPath));
      if P > 0 then
      begin
        Delete(OrigPath, P, Length(Dir) + 1);
        RegWriteExpandStringValue(HKEY_CURRENT_USER, 'Environment', 'Path', OrigPath);
      end;
    end;
  end;
end;
