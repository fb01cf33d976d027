#!/bin/bash
#SBATCH --job-name=wordcount
# Reads its input from blob storage and writes its result back (cloudhpc stages both):
#   cloudhpc storage put examples/jobs/words.txt blob://data/words.txt
#   cloudhpc storage mkdir results
#   cloudhpc submit examples/jobs/wordcount.sh --stage-in blob://data/words.txt:input/words.txt \
#       --stage-out result.txt:blob://results/wordcount/result.txt --wait
set -euo pipefail
tr -s '[:space:]' '\n' < input/words.txt | grep -v '^$' | sort | uniq -c | sort -rn > result.txt
echo "words: $(tr -s '[:space:]' '\n' < input/words.txt | grep -vc '^$')"
head -3 result.txt
