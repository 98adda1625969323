"""What a rejected `einjit` run must look like, shared by the end-to-end test scripts."""


def check_error_output(proc, allow_caret):
    """Checks a rejected run: status 1 and a one-line message (a spec error may add the
    offending source line and a caret, SpecError::render's format). Returns the problems."""
    problems = []
    if proc.returncode != 1:
        problems.append(f"exit status {proc.returncode}, expected 1")
    # "einjit: note: ..." lines (e.g. a target falling back to the reference executor) are
    # informational; the error itself must be one line.
    lines = [line for line in proc.stderr.rstrip("\n").split("\n")
             if line.strip() and not line.startswith("einjit: note:")]
    if not lines or not lines[0].strip():
        problems.append("no message on stderr")
    elif len(lines) != 1 and not (allow_caret and len(lines) in (2, 3)
                                  and lines[-1].strip() == "^"):
        problems.append(f"stderr is not a one-line message: {proc.stderr!r}")
    return problems
