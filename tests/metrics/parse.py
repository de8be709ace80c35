"""Reads a Prometheus text exposition (format 0.0.4) on stdin, prints what it says as JSON.

    parse.py < metrics.txt

Two readers, both must accept the input:

- a strict one, line by line, after the format's grammar (Prometheus' "Exposition formats" and
  Go's expfmt parser): `# HELP name text`, `# TYPE name kind`, and samples
  `name{label="value",...} value`, with only the escapes the format defines, every line ending in
  a line feed, and each family's lines together, right after its TYPE line;
- `prometheus_client.parser.text_string_to_metric_families`, the Python client's own parser
  (which is lax: it trims lines and tolerates things Go's parser refuses; hence the first).

The output is a JSON list of families, in order: {"name", "type", "help", "samples": [{"name",
"labels", "value"}]}, values as Python's repr of the float ("inf", "nan", "0.5"), as JSON has no
infinities. The Rust test `metrics::tests::python_prometheus_client_parses_the_rendering_back`
compares it with what it rendered.
"""

import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
# A label value: any character but backslash, quote and line feed, or one of the three escapes.
VALUE = r'(?:[^"\\\n]|\\[\\"n])*'
PAIR = rf'{LABEL}="{VALUE}"'
FLOAT = r"(?:[+-]?Inf|NaN|[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
SAMPLE = re.compile(rf"({NAME})(?:\{{({PAIR}(?:,{PAIR})*)?\}})? ({FLOAT})")
HELP = re.compile(rf"# HELP ({NAME}) ((?:[^\\\n]|\\[\\n])*)")
TYPE = re.compile(rf"# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)")
SUFFIXES = {
    "counter": [""],
    "gauge": [""],
    "untyped": [""],
    "histogram": ["_bucket", "_sum", "_count"],
    "summary": ["", "_sum", "_count"],
}


def strict(text):
    """Fails (SystemExit) at the first line the format does not allow."""
    if text and not text.endswith("\n"):
        sys.exit("parse.py: the last line has no line feed")
    family, kind, seen = None, None, set()
    for number, line in enumerate(text.split("\n")[:-1], 1):
        where = f"parse.py: line {number} {line!r}"
        if (m := HELP.fullmatch(line)) is not None:
            if m.group(1) in seen:
                sys.exit(f"{where}: the family {m.group(1)} appeared before")
            family, kind = m.group(1), None
        elif (m := TYPE.fullmatch(line)) is not None:
            if m.group(1) != family or kind is not None:
                sys.exit(f"{where}: TYPE must follow its family's HELP, once")
            kind = m.group(2)
            seen.add(family)
        elif (m := SAMPLE.fullmatch(line)) is not None:
            names = [family + suffix for suffix in SUFFIXES.get(kind, [])] if family else []
            if m.group(1) not in names:
                sys.exit(f"{where}: not a sample of the family {family} ({kind})")
        else:
            sys.exit(f"{where}: not a HELP, TYPE or sample line")


def main():
    text = sys.stdin.read()
    strict(text)
    families = []
    for family in text_string_to_metric_families(text):
        families.append({
            "name": family.name,
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": repr(float(s.value))}
                for s in family.samples
            ],
        })
    json.dump(families, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
