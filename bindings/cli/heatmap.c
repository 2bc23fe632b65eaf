/* SVG heatmap of a sweep: layers (rows, top = last layer) x tokens (columns,
 * labelled with the decoded tokens), a sequential colour scale and a legend.
 * Plain SVG 1.1 that any browser opens. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bindings/cli/cli.h"

/* white -> deep purple, perceptually even enough for a single-hue scale */
static void colour(double t, int *r, int *g, int *b) {
    if (!(t >= 0)) t = 0;
    if (t > 1) t = 1;
    static const double stops[5][3] = {{255, 255, 255}, {218, 218, 235}, {158, 154, 200}, {106, 81, 163}, {63, 0, 125}};
    double x = t * 4;
    int i = (int)x;
    if (i >= 4) i = 3;
    double f = x - i;
    *r = (int)lround(stops[i][0] + f * (stops[i + 1][0] - stops[i][0]));
    *g = (int)lround(stops[i][1] + f * (stops[i + 1][1] - stops[i][1]));
    *b = (int)lround(stops[i][2] + f * (stops[i + 1][2] - stops[i][2]));
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '&') fputs("&amp;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c < 0x20) fputc(' ', f);
        else fputc(c, f);
    }
}

int cli_write_heatmap(FILE *f, const char *title, const char *value_label, const float *scores, const int *layers,
                      int n_layers, const char *const *tokens, const int *positions, int n_positions,
                      const int *done_rows) {
    const int cell = 28, left = 70, top = 60, label_h = 110, legend_w = 90;
    int W = left + n_positions * cell + legend_w + 20, H = top + n_layers * cell + label_h;
    /* room for the title and the value line (about 8 and 6.5 px per character) */
    int tw = left + 8 * (int)strlen(title) + 20, vw = left + (int)(6.5 * (double)strlen(value_label)) + 20;
    if (tw > W) W = tw;
    if (vw > W) W = vw;
    double lo = INFINITY, hi = -INFINITY;
    for (int li = 0; li < n_layers; li++)
        for (int pi = 0; done_rows[li] && pi < n_positions; pi++) {
            double v = scores[(size_t)li * n_positions + pi];
            if (isfinite(v)) lo = v < lo ? v : lo, hi = v > hi ? v : hi;
        }
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) hi = lo + 1e-12;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"14\" font-weight=\"bold\">", left);
    xml_text(f, title);
    fprintf(f, "</text>\n<text x=\"%d\" y=\"40\" fill=\"#555\">", left);
    xml_text(f, value_label);
    fprintf(f, "</text>\n");
    for (int li = 0; li < n_layers; li++) {
        int y = top + (n_layers - 1 - li) * cell; /* last layer on top */
        fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">layer %d</text>\n", left - 6, y + cell / 2 + 4, layers[li]);
        for (int pi = 0; pi < n_positions; pi++) {
            double v = scores[(size_t)li * n_positions + pi];
            int r = 240, g = 240, b = 240;
            if (done_rows[li]) colour((v - lo) / (hi - lo), &r, &g, &b);
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\" stroke=\"#fff\">"
                       "<title>layer %d, position %d (",
                    left + pi * cell, y, cell, cell, r, g, b, layers[li], positions[pi]);
            xml_text(f, tokens[pi]);
            if (done_rows[li]) fprintf(f, "): %.6g</title></rect>\n", v);
            else fprintf(f, "): not computed</title></rect>\n");
        }
    }
    for (int pi = 0; pi < n_positions; pi++) {
        int x = left + pi * cell + cell / 2, y = top + n_layers * cell + 8;
        fprintf(f, "<text transform=\"translate(%d,%d) rotate(60)\" text-anchor=\"start\">", x - 3, y);
        xml_text(f, tokens[pi]);
        fprintf(f, "</text>\n");
    }
    /* legend */
    int lx = left + n_positions * cell + 30, ly = top, lh = n_layers * cell > 100 ? n_layers * cell : 100;
    for (int k = 0; k < 50; k++) {
        int r, g, b;
        colour(1.0 - k / 49.0, &r, &g, &b);
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" fill=\"rgb(%d,%d,%d)\"/>\n", lx,
                ly + k * lh / 50, lh / 50 + 1, r, g, b);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" fill=\"none\" stroke=\"#333\"/>\n", lx, ly, lh);
    fprintf(f, "<text x=\"%d\" y=\"%d\">%.4g</text>\n", lx + 20, ly + 10, hi);
    fprintf(f, "<text x=\"%d\" y=\"%d\">%.4g</text>\n", lx + 20, ly + lh, lo);
    fprintf(f, "</svg>\n");
    return ferror(f) ? -1 : 0;
}

/* Several heatmaps side by side in one SVG (a DAS grid's IIA beside a probe grid's accuracy, as the
 * pyvene paper's figure): each panel is cli_write_heatmap's document, nested as an <svg> at its
 * x offset. */
int cli_write_panels(FILE *f, const cli_panel *p, int n) {
    char *doc[8] = {0};
    size_t len[8] = {0};
    int w[8] = {0}, h[8] = {0}, W = 0, H = 0, rc = 0;
    if (n < 1 || n > 8) return -1;
    for (int k = 0; k < n && rc == 0; k++) {
        FILE *m = open_memstream(&doc[k], &len[k]);
        int *done = calloc((size_t)p[k].n_layers, sizeof(int));
        for (int l = 0; done && l < p[k].n_layers; l++) done[l] = 1;
        if (!m || !done || cli_write_heatmap(m, p[k].title, p[k].value_label, p[k].values, p[k].layers, p[k].n_layers,
                                             p[k].labels, p[k].positions, p[k].n_cols, done) != 0)
            rc = -1;
        if (m && fclose(m) != 0) rc = -1;
        free(done);
        const char *s = rc == 0 ? strstr(doc[k], "<svg ") : NULL;
        if (!s || sscanf(strstr(s, "width=\""), "width=\"%d\" height=\"%d\"", &w[k], &h[k]) != 2) rc = -1;
        W += w[k], H = h[k] > H ? h[k] : H;
    }
    if (rc == 0) {
        fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                   "height=\"%d\" viewBox=\"0 0 %d %d\">\n", W, H, W, H);
        for (int k = 0, x = 0; k < n; x += w[k], k++)
            fprintf(f, "<svg x=\"%d\" y=\"0\" %s", x, strstr(doc[k], "<svg ") + 5);
        fprintf(f, "</svg>\n");
        rc = ferror(f) ? -1 : 0;
    }
    for (int k = 0; k < n; k++) free(doc[k]);
    return rc;
}
