"""tfharm/cli/aliases.py: an old flag name sets the new flag, warns in one line, and is never
written back into a flagfile."""
from absl import flags

from tfharm.cli import aliases


def _flag_values():
  fv = flags.FlagValues()
  flags.DEFINE_string("output_dir", None, "A folder.", flag_values=fv)
  aliases.define_deprecated("export_dir", "output_dir", flag_values=fv)
  return fv


def test_the_old_name_sets_the_new_flag_and_warns_once(capsys):
  fv = _flag_values()
  fv(["prog", "--export_dir=a", "--export_dir=b"])
  assert fv.output_dir == "b" and fv["output_dir"].present
  assert capsys.readouterr().err == (
      "warning: --export_dir is deprecated, use --output_dir (--export_dir goes in version "
      f"{aliases.VERSION_REMOVED})\n")


def test_the_new_name_is_silent_and_a_saved_flagfile_has_only_it(capsys):
  fv = _flag_values()
  fv(["prog", "--output_dir=c"])
  assert capsys.readouterr().err == ""
  fv = _flag_values()
  fv(["prog", "--export_dir=d"])
  saved = fv.flags_into_string()
  assert "--output_dir=d" in saved and "export_dir" not in saved
