"""Notebook tools: %hft magics, control panel, bokeh plots, papermill reports."""
