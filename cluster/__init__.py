"""cluster: spatial-domain clustering (spatial graphs, STAGATE, GraphST, clustering heads, tuning,
spatial metrics).

It takes arrays or AnnData objects (``obsm['spatial']``, an expression matrix or an ``obsm``
embedding) and knows nothing of the grid. The methods arrive with the spatial-domain work; the
package exists now so that dependencies point one way from the start: ``grid`` -> ``cluster`` ->
``ssl_st``-free arrays.
"""
