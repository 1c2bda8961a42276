/* train/: the loss curve of a run as SVG 1.1 with axes, ticks, labels and a legend, written by
 * hand (no plotting library) so that any browser opens DIR/loss.svg while a run goes on. */
#include "train/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define W      860.0
#define H      520.0
#define LEFT   80.0
#define RIGHT  30.0
#define TOP    50.0
#define BOTTOM 70.0

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about n ticks over span. */
static double nice_step(double span, int n)
{
	double raw = span / n, p = pow(10.0, floor(log10(raw))), f = raw / p;
	return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * p;
}

static void escape(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '<')
			fputs("&lt;", f);
		else if (*s == '>')
			fputs("&gt;", f);
		else if (*s == '&')
			fputs("&amp;", f);
		else
			fputc(*s, f);
	}
}

int report_write_svg(const char *path, const struct loss_point *p, size_t n, const char *title)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -errno;

	double xmin = 0, xmax = 1, ymin = INFINITY, ymax = -INFINITY;
	for (size_t i = 0; i < n; i++) {
		if (p[i].step > xmax)
			xmax = p[i].step;
		float v[2] = { p[i].loss, p[i].val_loss };
		for (int k = 0; k < 2; k++) {
			if (!isfinite(v[k]))
				continue;
			ymin = fmin(ymin, v[k]);
			ymax = fmax(ymax, v[k]);
		}
	}
	if (!isfinite(ymin)) {
		ymin = 0;
		ymax = 1;
	}
	if (ymax - ymin < 1e-3) {
		ymin -= 0.5;
		ymax += 0.5;
	}
	double ystep = nice_step(ymax - ymin, 6);
	ymin = floor(ymin / ystep) * ystep;
	ymax = ceil(ymax / ystep) * ystep;
	double xstep = nice_step(xmax - xmin, 8);
	xmax = ceil(xmax / xstep) * xstep;
	double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define X(v) (LEFT + ((v)-xmin) / (xmax - xmin) * pw)
#define Y(v) (TOP + (ymax - (v)) / (ymax - ymin) * ph)

	fprintf(f,
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
		"viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"13\">\n",
		W, H, W, H);
	fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(f, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", W / 2);
	escape(f, title);
	fprintf(f, "</text>\n");
	/* grid and tick labels */
	for (double y = ymin; y <= ymax + ystep * 1e-6; y += ystep) {
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n",
			LEFT, Y(y), W - RIGHT, Y(y));
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 8,
			Y(y) + 4, y);
	}
	for (double x = xmin; x <= xmax + xstep * 1e-6; x += xstep) {
		fprintf(f,
			"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
			X(x), TOP, X(x), H - BOTTOM);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", X(x),
			H - BOTTOM + 20, x);
	}
	/* axes and their names */
	fprintf(f, "<path d=\"M%.1f %.1f V%.1f H%.1f\" fill=\"none\" stroke=\"black\"/>\n", LEFT,
		TOP, H - BOTTOM, W - RIGHT);
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n",
		LEFT + pw / 2, H - 22);
	fprintf(f,
		"<text transform=\"translate(22 %.1f) rotate(-90)\" text-anchor=\"middle\">"
		"loss (nats/token)</text>\n",
		TOP + ph / 2);
	/* training loss */
	if (n > 0) {
		fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" "
			   "points=\"");
		for (size_t i = 0; i < n; i++)
			if (isfinite(p[i].loss))
				fprintf(f, "%.1f,%.1f ", X(p[i].step), Y(p[i].loss));
		fprintf(f, "\"/>\n");
	}
	/* validation loss: a line through the evaluated steps, and a dot on each */
	fprintf(f, "<polyline fill=\"none\" stroke=\"#ff7f0e\" stroke-width=\"2\" points=\"");
	for (size_t i = 0; i < n; i++)
		if (isfinite(p[i].val_loss))
			fprintf(f, "%.1f,%.1f ", X(p[i].step), Y(p[i].val_loss));
	fprintf(f, "\"/>\n");
	for (size_t i = 0; i < n; i++)
		if (isfinite(p[i].val_loss))
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#ff7f0e\"/>\n",
				X(p[i].step), Y(p[i].val_loss));
	/* legend */
	double lx = W - RIGHT - 150, ly = TOP + 10;
	fprintf(f,
		"<rect x=\"%.1f\" y=\"%.1f\" width=\"140\" height=\"46\" fill=\"white\" "
		"stroke=\"#999\"/>\n",
		lx, ly);
	fprintf(f,
		"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" "
		"stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">train</text>\n",
		lx + 10, ly + 15, lx + 40, ly + 15, lx + 48, ly + 19);
	fprintf(f,
		"<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" "
		"stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">validation</text>\n",
		lx + 10, ly + 33, lx + 40, ly + 33, lx + 48, ly + 37);
	fprintf(f, "</svg>\n");
#undef X
#undef Y
	int rc = 0;
	if (fflush(f) != 0)
		rc = -errno;
	if (fclose(f) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		remove(tmp);
	return rc;
}
