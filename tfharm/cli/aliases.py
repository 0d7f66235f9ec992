"""Old flag spellings, kept for one version after the flags were given one vocabulary
(`--output_dir` for a folder, `--output` for a file, `--dataset_config` for the build config;
docs/cli.md, "Flags"): scripts and flagfiles written for the old names keep working, and each
old name used prints one warning line naming its replacement."""
from __future__ import annotations

import sys

from absl import flags

VERSION_REMOVED = "0.2.0"  # setup.py's version is 0.1.0: the aliases live for this one


def define_deprecated(old: str, new: str, module_name: str | None = None,
                      flag_values: flags.FlagValues = flags.FLAGS) -> flags.FlagHolder:
  """`--old=X` sets `--new` to X and warns once on stderr. Define after `--new`. The alias is
  never written into a flagfile (`append_flags_into_file`), so saved runs use the new name."""
  if module_name == "__main__":
    module_name = sys.argv[0]  # as absl names the flags of the module run as a program
  target = flag_values[new]
  warned = []

  class DeprecatedAlias(flags.Flag):
    """A flag whose value is the value of `new`; parsing it warns."""

    def parse(self, argument):
      if not warned:
        warned.append(True)
        sys.stderr.write(f"warning: --{old} is deprecated, use --{new} (--{old} goes in "
                         f"version {VERSION_REMOVED})\n")
      target.parse(argument)
      self.present += 1

    def _parse_from_default(self, value):
      return value

    @property
    def value(self):
      return target.value

    @value.setter
    def value(self, value):
      target.value = value

    def serialize(self):
      return ""

  return flags.DEFINE_flag(
      DeprecatedAlias(target.parser, target.serializer, old, target.default,
                      f"Deprecated: use --{new}.", boolean=target.boolean),
      flag_values=flag_values, module_name=module_name)
