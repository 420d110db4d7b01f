#!/bin/sh
# The original http_job_runner example: says hello, slowly.
echo "Hello,"
sleep 1
echo "world!"
