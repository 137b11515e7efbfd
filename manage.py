#!/usr/bin/env python
"""Django's command-line entry point for PrefLoop."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "prefloop.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except KeyboardInterrupt:  # Ctrl-C while Django starts (settings, apps, URL checks: a second or more) was a
        # traceback; a command's own work says on Ctrl-C what it kept, so this is what escaped that
        print(f"{' '.join(['manage.py', *sys.argv[1:2]])}: interrupted", file=sys.stderr)
        sys.exit(130)
