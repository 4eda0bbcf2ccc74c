"""The local emulator and the `spool` command line. Never imported by chalicelib/."""
