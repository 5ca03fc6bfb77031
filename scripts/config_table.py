"""Print the README's configuration table from eusdx.config.Settings (keeps the two from drifting)."""

from eusdx.config import Settings

print("| variable | default | meaning |")
print("|---|---|---|")
for name, field in Settings.model_fields.items():
    if name == "config_file":
        continue
    default = field.default
    if hasattr(default, "get_secret_value"):
        shown = "(built-in development secret: set your own)"
    elif isinstance(default, list):
        shown = ",".join(default) if default else "(empty)"
    elif default is None:
        shown = "(unset)"
    elif default == "":
        shown = "(empty)"
    else:
        shown = str(default)
    shown = shown.replace("|", "\\|")
    print(f"| `EUSDX_{name.upper()}` | `{shown}` | {field.description} |")
