"""A local web page for tfharm: `python -m tfharm.app` (docs/app.md).

  handling.py  one request: checks, the harmonise CLI's functions, the files to download
  overlay.py   the detector's map drawn over the photo
  examples.py  the demo composites shown as clickable examples (and the script that made them)
  page.py      the Gradio page
  __main__.py  the program: flags, loading the models once, serving on 127.0.0.1

Only page.py and __main__.py import Gradio, so the request handling is tested without it.
"""
