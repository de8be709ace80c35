#!/usr/bin/env python3
"""Judge an Autobahn|Testsuite report, of either side (stdlib only).

Reads <outdir>/index.json, as written by `wstest -m fuzzingclient` (wschat is
the server under test: run.sh) or by `wstest -m fuzzingserver` on
/updateReports (wschat is the client under test: run-client.sh); both have
the same format. Exits non-zero unless every selected case passed:

  * behavior is OK or INFORMATIONAL (NON-STRICT, FAILED, WRONG CODE,
    UNCLEAN, UNIMPLEMENTED, ... all fail);
  * behaviorClose is OK -- or INFORMATIONAL where the testsuite itself
    declares the whole case informational (it then sets behavior AND
    behaviorClose to INFORMATIONAL: cases 7.1.6, 7.13.1, 7.13.2);
  * an INFORMATIONAL case must still have completed its opening handshake
    (those cases are INFORMATIONAL unconditionally, even when wstest could
    not connect), which is read from the per-case report file;
  * a selected case with no result fails; a missing, unreadable or empty
    index.json fails (wstest exits 0 even when nothing connected, and the
    fuzzing server writes no report until a client asks for one).

The selected case ids come from --expected (a JSON list, or an object with a
"selected" list, as common.sh writes using the testsuite's own case registry).
Without --expected the cases present in the report are used, which cannot
detect missing ones, so a warning is printed.

Prints one line per failing case, then a summary line:
    autobahn: 301 cases, 301 passed, 0 failed
"""

import argparse
import json
import os
import sys

PASS_BEHAVIOR = {"OK", "INFORMATIONAL"}
HANDSHAKE_NOT_DONE = "opening handshake was never completed"


def case_key(case_id):
    try:
        return tuple(int(x) for x in case_id.split("."))
    except ValueError:
        return (float("inf"), case_id)


def summary(total, passed, failed):
    print("autobahn: %d cases, %d passed, %d failed" % (total, passed, failed))


def load_expected(path):
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict):
        data = data.get("selected")
    if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
        raise ValueError("expected a list of case ids")
    return data


def read_case_report(reports_dir, result):
    name = result.get("reportfile")
    if not name:
        return None
    try:
        with open(os.path.join(reports_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def judge(case_id, result, reports_dir):
    """Return None if the case passed, else a reason string."""
    if result is None:
        return "no result (case did not run: peer unreachable or crashed?)"
    if not isinstance(result, dict):
        return "malformed result %r" % (result,)
    behavior = result.get("behavior")
    close = result.get("behaviorClose")
    reasons = []
    if behavior not in PASS_BEHAVIOR:
        reasons.append("behavior=%s" % behavior)
    if close == "OK":
        pass
    elif close == "INFORMATIONAL" and behavior == "INFORMATIONAL":
        pass
    else:
        reasons.append("behaviorClose=%s" % close)
    if behavior == "INFORMATIONAL" and not reasons:
        report = read_case_report(reports_dir, result)
        if report is None:
            reasons.append("INFORMATIONAL but its case report %r is unreadable"
                           % result.get("reportfile"))
        elif HANDSHAKE_NOT_DONE in str(report.get("resultClose", "")):
            reasons.append("INFORMATIONAL but the opening handshake never completed")
    if not reasons:
        return None
    detail = []
    if result.get("remoteCloseCode") is not None:
        detail.append("remoteCloseCode=%s" % result.get("remoteCloseCode"))
    report = read_case_report(reports_dir, result)
    if report:
        for key in ("result", "resultClose"):
            if report.get(key):
                detail.append("%s: %s" % (key, report[key]))
    return ", ".join(reasons) + (" (" + "; ".join(detail) + ")" if detail else "")


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default=os.path.join(root, "target/autobahn/reports/index.json"),
                    help="wstest's index.json (default: %(default)s)")
    ap.add_argument("--agent", default=None,
                    help="agent name in index.json (default: the only one present)")
    ap.add_argument("--expected", default=None,
                    help="JSON file with the selected case ids (list, or {'selected': [...]})")
    args = ap.parse_args(argv)

    expected = None
    if args.expected:
        try:
            expected = load_expected(args.expected)
        except (OSError, ValueError) as e:
            print("autobahn: cannot read expected case list %s: %s" % (args.expected, e))
            summary(0, 0, 0)
            return 2
        if not expected:
            print("autobahn: expected case list %s is empty" % args.expected)
            summary(0, 0, 0)
            return 2

    def fail_all(msg):
        print("autobahn: FAIL: %s" % msg)
        n = len(expected) if expected else 0
        summary(n, 0, n)
        return 1

    try:
        with open(args.index) as f:
            index = json.load(f)
    except OSError as e:
        return fail_all("no report %s (%s); did wstest run and reach its peer?"
                        % (args.index, e.strerror or e))
    except ValueError as e:
        return fail_all("report %s is not valid JSON: %s" % (args.index, e))
    if not isinstance(index, dict) or not index:
        return fail_all("report %s holds no results (nothing connected?)" % args.index)

    if args.agent is None:
        if len(index) != 1:
            return fail_all("several agents in report (%s); pass --agent" % ", ".join(sorted(index)))
        agent = next(iter(index))
    else:
        agent = args.agent
    results = index.get(agent)
    if not isinstance(results, dict) or not results:
        return fail_all("no results for agent %r in %s (agents present: %s)"
                        % (agent, args.index, ", ".join(sorted(index)) or "none"))

    if expected is None:
        print("autobahn: warning: no --expected case list; judging only the %d cases "
              "present in the report (missing cases go undetected)" % len(results))
        expected = list(results)

    reports_dir = os.path.dirname(os.path.abspath(args.index))
    expected = sorted(set(expected), key=case_key)
    failures = []
    informational = []
    for case_id in expected:
        result = results.get(case_id)
        reason = judge(case_id, result, reports_dir)
        if reason is not None:
            failures.append((case_id, reason))
        elif result.get("behavior") == "INFORMATIONAL":
            informational.append(case_id)

    extra = sorted(set(results) - set(expected), key=case_key)
    if extra:
        print("autobahn: note: %d result(s) for cases not selected, ignored: %s"
              % (len(extra), " ".join(extra[:20]) + (" ..." if len(extra) > 20 else "")))
    if informational:
        print("autobahn: informational (accepted): %s" % " ".join(informational))
    missing = [c for c in expected if c not in results]
    for case_id, reason in failures:
        if case_id not in results:
            continue
        print("autobahn: FAIL %s: %s" % (case_id, reason))
    if missing:
        # One line, not hundreds, when the peer was down or died early.
        print("autobahn: FAIL no result (did not run: peer unreachable or crashed?) "
              "for %d case(s): %s" % (len(missing), " ".join(missing)))
    summary(len(expected), len(expected) - len(failures), len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
