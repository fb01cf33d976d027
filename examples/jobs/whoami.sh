#!/bin/sh
# Prints who the job runs as and where (jobs submitted through the API run as the token's user)
echo "$(id -un) on $(hostname) in $(pwd)"
