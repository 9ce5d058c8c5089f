"""Tables and plots made from result files."""
