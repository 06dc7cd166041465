"""Outcomes: what a run tells its user. The report, the progress lines, reject reasons and notices; no Beam, no HTTP."""
