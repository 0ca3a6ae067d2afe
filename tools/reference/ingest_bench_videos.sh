#!/usr/bin/env bash
# Makes the video set of the ingest benchmark (docs/benchmarks.md, "Ingest
# (lam-ingest)") in DIR with the ffmpeg CLI: Something-Something-v2-like VP9
# webm (426x240, 12 fps), h264 mp4 (640x360, 30 fps) and AV1 mp4 (320x240,
# 15 fps, LeRobot's default codec), testsrc2 content with temporal noise so
# the bitstreams are not trivially small.
set -euo pipefail
DIR=${1:?usage: ingest_bench_videos.sh DIR}
mkdir -p "$DIR"
ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
for i in 0 1 2 3 4 5; do
  ff -f lavfi -i "testsrc2=size=426x240:rate=12" -t 4 -vf "noise=alls=12:allf=t,hue=h=$((i * 60))" \
     -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 400k -pix_fmt yuv420p "$DIR/ssv2_like_$i.webm"
done
for i in 0 1 2; do
  ff -f lavfi -i "testsrc2=size=640x360:rate=30" -t 6 -vf "noise=alls=12:allf=t,hue=h=$((i * 90))" \
     -c:v libx264 -preset veryfast -pix_fmt yuv420p "$DIR/h264_$i.mp4"
done
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libsvtav1; then
  AV1=(-c:v libsvtav1 -preset 10)
else
  AV1=(-c:v libaom-av1 -cpu-used 8)
fi
for i in 0 1 2; do
  ff -f lavfi -i "testsrc2=size=320x240:rate=15" -t 6 -vf "noise=alls=12:allf=t,hue=h=$((i * 90))" \
     "${AV1[@]}" -pix_fmt yuv420p "$DIR/av1_$i.mp4"
done
ls -l "$DIR"
