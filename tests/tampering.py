"""Damaging a file on purpose, for the tests that check hash-verified files are refused."""
import os


def flip_middle_byte(path) -> None:
  """Flips one bit of the byte in the middle of `path`: same size, different content."""
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))
