#!/bin/sh
# The baseline `ak-audit-bench` compares `ecs-ak-audit actiontrail` with: the same grouping
# of ActionTrail events as OSS delivers them (gzip files of a JSON array, JSON lines or
# concatenated objects), done with the usual shell tools. Long-term keys are the
# `accessKeyId`s present and not starting with `STS.`; calls are counted by AccessKeyId, VPC
# (`-` for a public endpoint) and source IP.
#
# Usage: jq-baseline.sh FILE.gz...
# Prints: `  CALLS ACCESSKEYID<TAB>VPCID<TAB>SOURCEIP`, one line a group, sorted by key.
set -eu
zcat -- "$@" |
    jq -r 'if type == "array" then .[] else . end
        | select(.userIdentity.accessKeyId != null
            and (.userIdentity.accessKeyId | startswith("STS.") | not))
        | [.userIdentity.accessKeyId, (.vpcId // "-"), .sourceIpAddress] | @tsv' |
    LC_ALL=C sort | uniq -c
