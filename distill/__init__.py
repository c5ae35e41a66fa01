"""Teachers, trace generation and filtering, and (later) the student trainer."""
