"""`python -m harness.report`."""

from harness.report.build import main

if __name__ == "__main__":
    main()
